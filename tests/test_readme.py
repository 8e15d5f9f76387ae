"""The README's Python API examples, run as a user would paste them (in one session, in order)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def api_examples() -> list[str]:
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_python_api_examples_run(tmp_path, monkeypatch):
    blocks = api_examples()
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["report"]["passed"] and 0 <= namespace["metrics"]["mAP"] <= 100
    assert (tmp_path / "runs/api-rm/best/config.json").is_file() and namespace["tuned"]["written"]
    assert [r["status"] for r in namespace["timed"]["rows"]] == ["ok", "ok"]
