"""Foreign checkpoint formats <-> model directories (mmsegmentation .pth: import / export)."""
