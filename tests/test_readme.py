"""The README's Python API examples, run as a user would paste them (in one session, in order)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def api_examples() -> list[str]:
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_python_api_examples_run_and_run_again(tmp_path, monkeypatch):
    """Pasted twice into the same folder (a user trying again): the second time finds the first's
    run and export there, and still runs."""
    blocks = api_examples()
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        namespace: dict = {}
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
        assert namespace["report"]["passed"] and 0 <= namespace["metrics"]["mAP"] <= 100
        assert (tmp_path / "runs/api-rm/best/config.json").is_file() and namespace["tuned"]["written"]
        assert [r["status"] for r in namespace["timed"]["rows"]] == ["ok", "ok"]


def test_the_api_keywords_of_the_data_sets_are_documented():
    """Every DataSpec field is a keyword of le.train / le.evaluate; the README names the ones a user
    of their own photos needs (issue 19: `root` appeared nowhere)."""
    text = README.read_text()
    for keyword in ("root=", 'data="folder"'):
        assert keyword in text, keyword
