"""Loaders read the public formats (AgentBench dev files, BFCL's data layout, GSM8K) and ours."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from glm_agent.evals.suites import SUITE_NAMES, make_suite
from glm_agent.evals.suites.fc import bfcl_to_json_schema, load_bfcl_dir
from glm_agent.evals.task import TaskFileError


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_each_suite_ships_at_least_25_tasks(name):
    samples = make_suite(name).samples()
    assert len(samples) >= 25
    assert len({s.id for s in samples}) == len(samples)
    assert all(s.prompt for s in samples)


def test_agentbench_db_dev_loads(ev):
    samples = make_suite("db", data=ev.agentbench_file("db_dev.jsonl")).samples()
    assert len(samples) == 60
    assert Counter(s.category for s in samples) == {"SELECT": 20, "INSERT": 20, "UPDATE": 20}
    first = samples[0]
    assert first.id == "db_dev-1" and first.source.endswith("db_dev.jsonl:1")
    assert "The name of this table is" in first.prompt
    assert first.gold["label"] == ["March 19, 1998"]


def test_agentbench_os_dev_loads(ev):
    samples = make_suite("os", data=ev.agentbench_file("os_dev.json")).samples()
    assert len(samples) == 26
    kinds = Counter("match" if "match" in s.gold["judge"] else "check" for s in samples)
    assert kinds == {"check": 21, "match": 5}
    # item 24 keeps its example at the top level; item 21's init is a bare string
    assert samples[24].gold["example"] == {"code": "chmod 777 test && ~/test"}
    assert samples[21].gold["init"][0]["code"].startswith("echo 123>/root/.tmp")
    assert samples[25].gold["init"] == [{"file": "init/stock-log.sh"}]
    assert samples[0].gold["start"]["code"].startswith("python3 -c")


def test_agentbench_os_folder_layout(tmp_path):
    (tmp_path / "data" / "1").mkdir(parents=True)
    task = {"description": "d", "evaluation": {"match": "x"}}
    (tmp_path / "data" / "1" / "a.json").write_text(json.dumps([task, task]))
    (tmp_path / "data" / "b.json").write_text(json.dumps(task))
    samples = make_suite("os", data=tmp_path / "data").samples()
    assert [s.id for s in samples] == ["data-1-a-0", "data-1-a-1", "data-b-0"]


def _bfcl_layout(folder, version="v3"):
    (folder / "possible_answer").mkdir(parents=True)
    fn = {"name": "calc.area", "description": "area", "parameters": {"type": "dict", "properties": {
        "base": {"type": "float"}, "height": {"type": "float"}, "unit": {"type": "string"},
        "opts": {"type": "dict", "properties": {"round": {"type": "boolean"}}},
        "dims": {"type": "tuple", "items": {"type": "float"}}}, "required": ["base", "height"]}}
    simple = "simple" if version == "v3" else "simple_python"
    q = {"id": f"{simple}_0", "question": [[{"role": "user", "content": "Area of base 10 height 5?"}]], "function": [fn]}
    a = {"id": f"{simple}_0", "ground_truth": [{"calc.area": {"base": [10.0], "height": [5.0], "unit": ["", "units"]}}]}
    irr = {"id": "irrelevance_0", "question": [[{"role": "user", "content": "Who won in 1998?"}]], "function": [fn]}
    (folder / f"BFCL_{version}_{simple}.json").write_text(json.dumps(q) + "\n")
    (folder / "possible_answer" / f"BFCL_{version}_{simple}.json").write_text(json.dumps(a) + "\n")
    (folder / f"BFCL_{version}_irrelevance.json").write_text(json.dumps(irr) + "\n")
    (folder / f"BFCL_{version}_live_simple.json").write_text("not read\n")  # other categories are ignored


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_bfcl_data_layout_loads(tmp_path, version):
    _bfcl_layout(tmp_path, version)
    samples = make_suite("fc", data=tmp_path).samples()
    assert [(s.id, s.category) for s in samples] == [("irrelevance_0", "irrelevance"), (samples[1].id, "simple")]
    simple = samples[1]
    assert simple.gold["ground_truth"][0]["calc.area"]["base"] == [10.0]


def test_bfcl_schema_conversion_and_missing_answers(tmp_path):
    _bfcl_layout(tmp_path)
    samples = load_bfcl_dir(tmp_path)
    schema = bfcl_to_json_schema(samples[1].gold["functions"][0]["parameters"])
    assert schema["type"] == "object"
    assert schema["properties"]["base"]["type"] == "number"
    assert schema["properties"]["opts"]["type"] == "object"
    assert schema["properties"]["dims"] == {"type": "array", "items": {"type": "number"}}
    (tmp_path / "possible_answer" / "BFCL_v3_simple.json").unlink()
    with pytest.raises(TaskFileError, match="possible-answer"):
        load_bfcl_dir(tmp_path)
    with pytest.raises(TaskFileError, match="no BFCL"):
        load_bfcl_dir(tmp_path / "possible_answer")


def test_bfcl_package_data_when_installed():
    import importlib.util

    if importlib.util.find_spec("bfcl_eval") is None:
        with pytest.raises(TaskFileError, match="bfcl-eval"):
            make_suite("fc", data="bfcl").samples()
    else:  # pragma: no cover - only where the package is installed
        samples = make_suite("fc", data="bfcl").samples()
        assert {s.category for s in samples} >= {"simple", "multiple", "parallel", "irrelevance"}


def test_gsm8k_format(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"question": "Q?", "answer": "She has 2+3=<<2+3=5>>5.\n#### 1,005"}) + "\n")
    (sample,) = make_suite("math", data=path).samples()
    assert sample.gold["number"] == "1005" and sample.id == "test-1"
    assert make_suite("math").oracle(sample)[0].arguments == {"code": "print(1005)"}


# -- AgentBench's os_interaction layout: the tasks find their scripts/N/ ----------------------
def _os_data_forms(root, base):
    """Every way --data may name the same tasks: the folder, its data/, os.yaml, a JSON list."""
    listing = root / "files.json"
    listing.write_text(json.dumps([{"problem_file": "data/os_interaction/data/1/*.json",
                                    "script_dir": "data/os_interaction/scripts/1/", "index_prefix": "std-001-"}]))
    return [base, base / "data", root / "configs" / "tasks" / "os.yaml",
            root / "configs" / "tasks" / "os.yaml#os-std", listing]


def test_agentbench_os_layout_finds_its_scripts(ev, tmp_path):
    base = ev.agentbench_os_layout(tmp_path)
    for data in _os_data_forms(tmp_path, base):
        suite = make_suite("os", data=data)
        samples = suite.samples()
        assert [s.id for s in samples] == ["std-001-tasks-0", "std-001-tasks-1"], data
        first = samples[0]
        # The init, example and check files resolve from scripts/1/ (AgentBench: script_dir + file).
        assert suite._resolve(first, first.gold["init"][0], "init")[0].startswith("mkdir -p /root/d")
        assert suite._resolve(first, first.gold["example"], "example")[0] == "ls /root/d | wc -l\n"
        assert suite._resolve(first, first.gold["judge"]["check"][1], "check")[1] == "python"


def test_agentbench_os_config_names_a_set_and_says_what_is_wrong(ev, tmp_path):
    ev.agentbench_os_layout(tmp_path)
    config = tmp_path / "configs" / "tasks" / "os.yaml"
    with pytest.raises(TaskFileError, match="no task set 'os-dev' .*it has: os-std"):
        make_suite("os", data=f"{config}#os-dev").samples()
    bad = tmp_path / "bad.yaml"
    bad.write_text("- problem_file: nowhere/*.json\n  script_dir: x/\n")
    with pytest.raises(TaskFileError, match="no task files match 'nowhere/\\*.json'"):
        make_suite("os", data=bad).samples()
