import json

import pytest

from energy.tables import load_table


def test_default_table_matches_the_brief():
    t = load_table()
    assert t.node_nm == 45
    assert t["int8_add"].joules == pytest.approx(0.03e-12)
    assert t["fp16_mult"].joules == pytest.approx(1.1e-12)
    assert t["dram_64b_low"].joules == pytest.approx(1.3e-9)
    assert all(e.source for e in t.entries.values())


def test_unknown_action_and_table():
    with pytest.raises(KeyError, match="action must be one of .*not 'int4_add'"):
        load_table()["int4_add"]
    with pytest.raises(ValueError, match="energy table must be one of horowitz_45nm"):
        load_table("tsmc3")


@pytest.mark.parametrize("entry, msg", [
    ({"value": 1, "unit": "mJ", "source": "x"}, "unit must be one of pJ, nJ, fJ, not 'mJ'"),
    ({"value": -1, "unit": "pJ", "source": "x"}, "value must be a positive number"),
    ({"value": 1, "unit": "pJ"}, "source is missing"),
])
def test_bad_entries_are_rejected(tmp_path, entry, msg):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"name": "t", "source": "s", "node_nm": 7, "entries": {"a": entry}}))
    with pytest.raises(ValueError, match=msg):
        load_table(p)
