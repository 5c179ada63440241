"""Models: what a model directory is (:mod:`.info`) and the runnable modules built from it (:mod:`.loading`).

The package's layers and who may import whom (``tests/test_layers.py`` holds the rules): the merge core (the
top-level modules and ``architectures``); ``models``, which imports only the core; ``eval``, which imports the
core and ``models`` but never ``formats`` (an imported checkpoint reaches evaluation as a model directory and a
loader); ``formats``, other toolkits' files to and from model directories; ``tools``; and ``cli``, which nothing
else imports. ``import layerseg_merge.models`` imports no torch.
"""
