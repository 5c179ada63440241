"""The README and `layerseg --help` say what the code does."""

import re

from click.testing import CliRunner
from helpers import REPO, needs_clone

from layerseg_merge.architectures import HOSTS
from layerseg_merge.cli import COMMANDS, main


@needs_clone
def test_readme_architecture_table_matches_the_definitions():
    readme = (REPO / "README.md").read_text()
    rows = {name: (prefix, backbone) for name, prefix, backbone in
            re.findall(r"^\| `(\w+)` \| (`[^`]*`|\(root\)) \| (.+) \|$", readme, re.MULTILINE)}
    assert set(rows) == set(HOSTS)
    for name, host in HOSTS.items():
        assert rows[name][0] == (f"`{host.prefix}`" if host.prefix else "(root)"), name
    printed = CliRunner().invoke(main, ["architectures"]).output
    for name, host in HOSTS.items():
        found = re.search(rf"^{name}\s+{re.escape(host.prefix or '(root)')}\s+(.+)$", printed, re.MULTILINE)
        assert found, name
        # the README's backbone column says what the command prints, then perhaps more
        assert rows[name][1].replace("`", "").startswith(found[1].strip()), (name, rows[name][1], found[1])


def test_help_summaries_are_the_commands_own():
    for name, (_, _, summary) in COMMANDS.items():
        command = main.get_command(None, name)
        assert command.help.split("\n\n")[0].replace("\n", " ").strip() == summary, name


@needs_clone
def test_readme_starts_with_the_two_commands_ci_runs():
    readme = (REPO / "README.md").read_text()
    first = readme[readme.index("```bash"):].split("```")[1]
    ci = (REPO / ".ci" / "run").read_text()
    install = next(line for line in first.splitlines() if line.startswith("python3 -m venv"))
    assert "pip install torch==2.13.0 && pip install \".[test]\"" in install and "layerseg demo" in install
    assert "layerseg selftest -q" in first.splitlines()
    assert 'pip install torch==2.13.0 && pip install ".[test]"' in ci and "\nlayerseg selftest -q\n" in ci


@needs_clone
def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's Python API example, as written, from an empty directory."""
    (code,) = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 (our own README)
    assert (tmp_path / "merged" / "model.safetensors").is_file()
