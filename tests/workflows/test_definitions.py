import copy
import json
from pathlib import Path

import pytest
import yaml
from django.conf import settings as django_settings

from workflows.definitions import (
    AgentSpec,
    DefinitionError,
    NodeSpec,
    WorkflowDefinition,
    list_workflows,
    load_file,
    load_workflow,
    validate_all,
)

SHIPPED = ("demo", "product-review", "quick-chat")

VALID = {
    "slug": "tiny",
    "name": "Tiny",
    "description": "For tests.",
    "agents": {
        "writer": {
            "name": "Writer",
            "role": "Writes",
            "model": "scripted-small",
            "provider": "scripted",
            "prompt": "Write something.",
        },
        "critic": {
            "name": "Critic",
            "role": "Criticises",
            "model": "scripted-large",
            "prompt": "Criticise it.",
        },
    },
    "nodes": [
        {"id": "draft", "type": "agent", "agent": "writer", "options": {"max_tokens": 10}},
        {"id": "left", "type": "agent", "agent": "critic", "depends_on": ["draft"]},
        {"id": "right", "type": "agent", "agent": "critic", "depends_on": ["draft"]},
        {"id": "final", "type": "agent", "agent": "writer", "depends_on": ["left", "right"]},
        {"id": "check", "type": "human_review", "depends_on": ["final"]},
    ],
}


def write(tmp_path: Path, data: dict, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def mutated(change) -> dict:
    data = copy.deepcopy(VALID)
    change(data)
    return data


def node(data: dict, node_id: str) -> dict:
    return next(n for n in data["nodes"] if n["id"] == node_id)


def load_error(tmp_path: Path, data: dict) -> DefinitionError:
    path = write(tmp_path, data)
    with pytest.raises(DefinitionError) as info:
        load_file(path)
    assert str(path) in str(info.value)  # the message always names the file
    assert info.value.source == str(path)
    return info.value


# --------------------------------------------------------------------------- valid files


def test_valid_file_loads_with_defaults(tmp_path):
    definition = load_file(write(tmp_path, VALID))
    assert definition.slug == "tiny"
    assert [n.id for n in definition.nodes] == ["draft", "left", "right", "final", "check"]
    draft = definition.node("draft")
    assert draft.agent == AgentSpec(
        id="writer",
        name="Writer",
        role="Writes",
        model="scripted-small",
        prompt="Write something.",
        provider="scripted",
    )
    assert draft.title == "Writer"  # default title is the agent's name
    assert draft.options == {"max_tokens": 10}
    assert definition.agents["critic"].provider == "scripted"  # default provider
    check = definition.node("check")
    assert check.agent is None
    assert check.title == "Human review"
    assert check.options == {
        "reviews": "final",  # its single dependency
        "reason": "Review the output of Writer",
        "timeout": None,
        "default_decision": "approve",
        "max_rounds": 1,
    }


def test_topological_order_roots_and_dependents(tmp_path):
    definition = load_file(write(tmp_path, VALID))
    assert definition.topological_order() == ["draft", "left", "right", "final", "check"]
    assert definition.roots() == ["draft"]
    assert definition.dependents("draft") == {"left", "right", "final", "check"}
    assert definition.dependents("left") == {"final", "check"}
    assert definition.dependents("check") == set()
    assert definition.ancestors("final") == {"draft", "left", "right"}
    with pytest.raises(KeyError):
        definition.node("nope")


def test_topological_order_puts_dependencies_first_even_if_file_order_differs(tmp_path):
    data = mutated(lambda d: d["nodes"].reverse())
    definition = load_file(write(tmp_path, data))
    order = definition.topological_order()
    for spec in definition.nodes:
        for dep in spec.depends_on:
            assert order.index(dep) < order.index(spec.id)
    assert order[0] == "draft" and order[-1] == "check"
    assert order[1:3] == ["right", "left"]  # ties keep file order


def test_round_trip_through_json(tmp_path):
    definition = load_file(write(tmp_path, VALID))
    data = json.loads(json.dumps(definition.to_dict()))
    again = WorkflowDefinition.from_dict(data, source="session 42")
    assert again == definition
    assert again.source == "session 42"
    assert again.to_dict() == definition.to_dict()


def test_to_dict_is_a_copy(tmp_path):
    definition = load_file(write(tmp_path, VALID))
    data = definition.to_dict()
    data["nodes"][0]["options"]["max_tokens"] = 999
    assert definition.node("draft").options == {"max_tokens": 10}


def test_from_dict_can_skip_model_check_for_stored_copies(tmp_path):
    data = mutated(lambda d: d["agents"]["writer"].update(model="retired-model"))
    with pytest.raises(DefinitionError, match="unknown model 'retired-model'"):
        WorkflowDefinition.from_dict(data, source="stored")
    loaded = WorkflowDefinition.from_dict(data, source="stored", check_models=False)
    assert loaded.agents["writer"].model == "retired-model"


# --------------------------------------------------------------------------- shipped files


@pytest.mark.parametrize("slug", SHIPPED)
def test_shipped_workflows_load_and_round_trip(slug):
    definition = load_workflow(slug)
    assert definition.slug == slug
    assert definition.source == f"workflows/definitions/{slug}.yaml"
    again = WorkflowDefinition.from_dict(json.loads(json.dumps(definition.to_dict())), source="copy")
    assert again == definition
    assert len(definition.topological_order()) == len(definition.nodes)


def test_demo_shape():
    demo = load_workflow("demo")
    assert demo.topological_order()[:2] == ["brief", "research"]
    for branch in ("market", "tech", "risk"):
        assert demo.node(branch).depends_on == ("research",)
    assert set(demo.node("merge").depends_on) == {"market", "tech", "risk"}
    review = demo.node("review")
    assert review.type == "human_review"
    assert review.options["reviews"] == "merge"
    assert review.options["timeout"] == 300
    assert review.options["default_decision"] == "approve"
    assert review.options["max_rounds"] == 2
    assert demo.node("summary").depends_on == ("review",)
    agent_ids = [n.agent.id for n in demo.nodes if n.agent]
    assert len(set(agent_ids)) == len(agent_ids)  # distinct agents
    assert {a.provider for a in demo.agents.values()} == {"scripted"}
    assert {a.model for a in demo.agents.values()} == {"scripted-small", "scripted-large"}


def test_product_review_and_quick_chat_shape():
    review = load_workflow("product-review")
    parallel = [n.id for n in review.nodes if n.depends_on == ("proposal",)]
    assert len(parallel) == 3
    assert [n.id for n in review.nodes if n.type == "human_review"] == ["approval"]
    quick = load_workflow("quick-chat")
    assert [n.type for n in quick.nodes] == ["agent", "agent"]
    assert quick.topological_order() == ["question", "answer"]


def test_list_workflows_sorted_by_name_and_validate_all():
    workflows = list_workflows()
    assert {w.slug for w in workflows} >= set(SHIPPED)
    names = [w.name.lower() for w in workflows]
    assert names == sorted(names)
    validate_all()


def test_load_workflow_unknown_slug(settings, tmp_path):
    settings.WORKFLOW_DIR = tmp_path
    with pytest.raises(DefinitionError, match="unknown workflow") as info:
        load_workflow("demo")
    assert info.value.source == "demo"
    with pytest.raises(DefinitionError, match="not a valid workflow slug"):
        load_workflow("../config/settings")


def test_validate_all_and_list_raise_on_a_bad_file(settings, tmp_path):
    settings.WORKFLOW_DIR = tmp_path
    with pytest.raises(DefinitionError, match="no workflow files"):
        validate_all()
    write(tmp_path, VALID)
    validate_all()
    node_error = mutated(lambda d: node(d, "left").update(depends_on=["ghost"]))
    write(tmp_path, {**node_error, "slug": "broken"}, name="broken")
    with pytest.raises(DefinitionError, match=r"broken\.yaml: node 'left'"):
        validate_all()
    with pytest.raises(DefinitionError):
        list_workflows()


def test_files_are_reread_on_use(settings, tmp_path):
    settings.WORKFLOW_DIR = tmp_path
    write(tmp_path, VALID)
    assert load_workflow("tiny").name == "Tiny"
    write(tmp_path, {**VALID, "name": "Renamed"})
    assert load_workflow("tiny").name == "Renamed"


def test_source_is_relative_to_the_project_for_shipped_files():
    path = Path(django_settings.BASE_DIR) / "workflows" / "definitions" / "demo.yaml"
    assert load_file(path).source == "workflows/definitions/demo.yaml"


# --------------------------------------------------------------------------- errors


def test_error_message_format(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").update(depends_on=["ghost"])))
    path = tmp_path / "tiny.yaml"
    assert str(err) == f"{path}: node 'left': depends on unknown node 'ghost'"
    assert err.node_id == "left"
    assert isinstance(err, ValueError)


def test_cycle_names_a_node_on_the_cycle(tmp_path):
    def change(d):
        node(d, "draft")["depends_on"] = ["final"]

    err = load_error(tmp_path, mutated(change))
    assert "dependency cycle" in str(err)
    assert err.node_id in {"draft", "left", "right", "final"}
    assert f"node '{err.node_id}'" in str(err)


def test_self_dependency_is_a_cycle(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").update(depends_on=["left"])))
    assert err.node_id == "left"
    assert "cycle" in str(err)


def test_cycle_not_through_roots(tmp_path):
    def change(d):
        node(d, "left")["depends_on"] = ["draft", "right"]
        node(d, "right")["depends_on"] = ["left"]

    err = load_error(tmp_path, mutated(change))
    assert "dependency cycle" in str(err)
    assert err.node_id in {"left", "right"}


def test_unknown_agent(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").update(agent="ghost")))
    assert err.node_id == "left"
    assert "unknown agent 'ghost'" in str(err)


def test_agent_node_without_agent(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").pop("agent")))
    assert err.node_id == "left"
    assert "'agent'" in str(err)


def test_unknown_model(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: d["agents"]["critic"].update(model="gpt-99")))
    assert "agent 'critic' uses unknown model 'gpt-99'" in str(err)


def test_unknown_provider(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: d["agents"]["critic"].update(provider="anthropic")))
    assert "unknown provider 'anthropic'" in str(err)


def test_duplicate_node_id(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: d["nodes"].append(dict(node(d, "left")))))
    assert err.node_id == "left"
    assert "duplicate node id" in str(err)


@pytest.mark.parametrize(
    ("node_id", "options", "fragment"),
    [
        ("draft", {"max_tokens": "ten"}, "'max_tokens' must be an integer"),
        ("draft", {"max_tokens": 0}, "'max_tokens' must be an integer"),
        ("draft", {"max_tokens": True}, "'max_tokens' must be an integer"),
        ("draft", {"fail": "yes"}, "'fail' must be true or false"),
        ("draft", {"thinking": 1}, "'thinking' must be true or false"),
        ("draft", {"temperature": "hot"}, "'temperature' must be a number"),
        ("draft", {"temperature": 3}, "'temperature' must be a number"),
        ("draft", {"fail_after_tokens": -1}, "'fail_after_tokens' must be an integer"),
        ("check", {"timeout": "5m"}, "'timeout' must be an integer"),
        ("check", {"timeout": 0}, "'timeout' must be an integer"),
        ("check", {"default_decision": "maybe"}, "'default_decision' must be approve or reject"),
        ("check", {"max_rounds": 0}, "'max_rounds' must be an integer >= 1"),
        ("check", {"reason": 5}, "'reason' must be a string"),
    ],
)
def test_bad_option_types(tmp_path, node_id, options, fragment):
    err = load_error(tmp_path, mutated(lambda d: node(d, node_id).update(options=options)))
    assert err.node_id == node_id
    assert fragment in str(err)


def test_bad_field_types(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").update(depends_on="draft")))
    assert err.node_id == "left" and "'depends_on' must be a list" in str(err)
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").update(title=5)))
    assert err.node_id == "left" and "'title' must be a string" in str(err)
    err = load_error(tmp_path, mutated(lambda d: d.update(nodes={"a": 1})))
    assert "'nodes' must be a list" in str(err)
    err = load_error(tmp_path, mutated(lambda d: d["agents"]["critic"].update(prompt=["x"])))
    assert "agent 'critic' 'prompt' must be a string" in str(err)
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").update(type="robot")))
    assert err.node_id == "left" and "unknown type 'robot'" in str(err)


@pytest.mark.parametrize(
    ("change", "node_id", "fragment"),
    [
        (lambda d: d.update(nmae="typo"), None, "unknown key 'nmae' in the workflow"),
        (lambda d: d["agents"]["critic"].update(modle="x"), None, "unknown key 'modle'"),
        (lambda d: node(d, "left").update(depends="draft"), "left", "unknown key 'depends'"),
        (
            lambda d: node(d, "draft").update(options={"max_token": 5}),
            "draft",
            "unknown key 'max_token' in agent options",
        ),
        (
            lambda d: node(d, "check").update(options={"timout": 5}),
            "check",
            "unknown key 'timout' in human_review options",
        ),
        (
            lambda d: node(d, "check").update(options={"max_tokens": 5}),
            "check",
            "unknown key 'max_tokens' in human_review options",
        ),
    ],
)
def test_unknown_keys_are_errors(tmp_path, change, node_id, fragment):
    err = load_error(tmp_path, mutated(change))
    assert err.node_id == node_id
    assert fragment in str(err)


def test_duplicate_yaml_key_is_an_error(tmp_path):
    path = tmp_path / "tiny.yaml"
    text = yaml.safe_dump(VALID, sort_keys=False)
    path.write_text(text + "name: Second name\n")
    with pytest.raises(DefinitionError, match="duplicate key 'name'"):
        load_file(path)


def test_missing_required_keys(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: d["agents"]["critic"].pop("prompt")))
    assert "agent 'critic' is missing required key 'prompt'" in str(err)
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").pop("type")))
    assert err.node_id == "left" and "missing required key 'type'" in str(err)


def test_at_least_one_node(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: d.update(nodes=[])))
    assert "at least one node" in str(err)


@pytest.mark.parametrize("slug", ["Demo", "-demo", "demo_1", "a" * 51, ""])
def test_bad_slug(tmp_path, slug):
    err = load_error(tmp_path, mutated(lambda d: d.update(slug=slug)))
    assert "slug" in str(err)


def test_slug_must_match_file_name(tmp_path):
    path = write(tmp_path, VALID, name="other")
    with pytest.raises(DefinitionError, match=r"does not match the file name 'other\.yaml'"):
        load_file(path)


@pytest.mark.parametrize("bad_id", ["Left", "1st", "with-dash", "x" * 41])
def test_bad_node_id(tmp_path, bad_id):
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").update(id=bad_id)))
    assert "needs an 'id' matching" in str(err)


@pytest.mark.parametrize(
    ("options", "depends_on", "fragment"),
    [
        ({"reviews": "ghost"}, ["final"], "reviews unknown node 'ghost'"),
        ({"reviews": "left"}, ["final"], None),  # an ancestor further up is fine
        ({}, ["left", "right"], "set options.reviews"),
        ({"reviews": "final"}, [], "not upstream"),
        ({"reviews": "final"}, ["draft"], "not upstream"),
        ({"reviews": "other_review"}, ["other_review"], "not an agent node"),
    ],
)
def test_review_target(tmp_path, options, depends_on, fragment):
    def change(d):
        d["nodes"].append({"id": "other_review", "type": "human_review", "depends_on": ["draft"]})
        node(d, "check").update(options=options, depends_on=depends_on)

    data = mutated(change)
    if fragment is None:
        assert load_file(write(tmp_path, data)).node("check").options["reviews"] == "left"
        return
    err = load_error(tmp_path, data)
    assert err.node_id == "check"
    assert fragment in str(err)


def test_review_nodes_take_no_agent(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: node(d, "check").update(agent="writer")))
    assert err.node_id == "check" and "take no 'agent'" in str(err)


def test_invalid_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("slug: [unclosed\n")
    with pytest.raises(DefinitionError, match="invalid YAML"):
        load_file(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(DefinitionError, match="must be a mapping"):
        load_file(path)


def test_node_spec_is_frozen(tmp_path):
    definition = load_file(write(tmp_path, VALID))
    spec: NodeSpec = definition.node("draft")
    with pytest.raises(AttributeError):
        spec.title = "changed"  # type: ignore[misc]
