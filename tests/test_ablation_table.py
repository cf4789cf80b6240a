"""The ablation table reads each run's eval.json and states every run relative to the first."""
import json

from perception.tools.ablation_table import table


def _eval(path, m_ap, car_ap):
    per = {c: {"AP": m_ap, "AP@0.5": 0.0, "AP@1.0": m_ap / 2, "AP@2.0": m_ap, "AP@4.0": 2 * m_ap}
           for c in ("car", "truck")}
    per["car"]["AP"] = car_ap
    path.mkdir()
    (path / "eval.json").write_text(json.dumps({"mAP": m_ap, "NDS": m_ap / 2, "mATE": 0.5, "mAOE": 1.0,
                                                "per_class": per}))


def test_table_rows_are_relative_to_the_first_run(tmp_path):
    _eval(tmp_path / "baseline", 0.2, 0.4)
    _eval(tmp_path / "no_pos", 0.05, 0.1)
    rows = table(tmp_path, ["baseline", "no_pos"]).splitlines()
    assert rows[0].startswith("| run | mAP |") and len(rows) == 4
    base, no_pos = (r.split(" | ") for r in rows[2:])
    assert base[1] == "0.200" and base[7] == "0.400" and base[-1].startswith("100%")
    assert no_pos[1] == "0.050" and no_pos[7] == "0.100" and no_pos[-1].startswith("25%")


def test_per_class_table_has_a_column_per_class(tmp_path):
    _eval(tmp_path / "baseline", 0.2, 0.4)
    _eval(tmp_path / "balanced", 0.3, 0.1)
    rows = table(tmp_path, ["baseline", "balanced"], per_class=True).splitlines()
    assert "| car AP | truck AP |" in rows[0]
    assert all(len(r.split("|")) == len(rows[0].split("|")) for r in rows)
    balanced = rows[3].split(" | ")
    assert balanced[7:9] == ["0.100", "0.300"] and balanced[-1].startswith("150%")


def test_extra_evals_add_a_column_each(tmp_path):
    _eval(tmp_path / "baseline", 0.2, 0.4)
    _eval(tmp_path / "no_cross", 0.1, 0.2)
    for name, m_ap in (("baseline", 0.15), ("no_cross", 0.05)):
        (tmp_path / name / "eval_rig3.json").write_text(json.dumps({"mAP": m_ap}))
    rows = table(tmp_path, ["baseline", "no_cross"], extra=("eval_rig3.json",)).splitlines()
    assert rows[0].endswith("| mAP vs baseline | mAP eval_rig3 |")
    assert rows[1].count("---") == rows[0].count("|") - 1
    assert rows[2].endswith("| 0.150 |") and rows[3].endswith("| 0.050 |")
