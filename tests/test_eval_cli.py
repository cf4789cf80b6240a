"""`perception eval` end to end on the shipped model: the JSON report has the keys the issue
names, the range bands cover all the truth, and the plots are written."""
import json

from perception.commands.eval import main


def test_eval_writes_report_and_plots(tmp_path):
    report = tmp_path / "report.json"
    assert main(["--scenes", "2", "--seed", "0", "--no-progress", "--json", str(report)]) == 0
    m = json.loads(report.read_text())
    assert {"mAP", "NDS", "per_class", "scenes", "per_range"} <= set(m)
    assert m["scenes"] == 2
    assert set(m["per_class"]) == {"car", "truck", "pedestrian", "cyclist", "traffic_cone"}
    for r in m["per_class"].values():
        assert {"AP", "ATE", "ASE", "AOE"} <= set(r)
    total = sum(r["num_gt"] for r in m["per_class"].values())
    assert total > 0
    assert sum(sum(b["num_gt"].values()) for b in m["per_range"]) == total
    for name in ("pr_curves.png", "ap_vs_range.png", "scene.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_eval_reports_a_missing_model_as_an_error(tmp_path):
    assert main(["--model", str(tmp_path / "nope"), "--scenes", "1", "--no-progress"]) == 2
