import copy
import io
import itertools
import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from django.apps import apps
from django.conf import settings as django_settings
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from workflows.apps import check_workflow_definitions
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


def test_a_model_without_a_price_is_not_a_definition_error(tmp_path):
    # It runs with its cost shown as "price unknown"; the sessions_app.W001 check lists it.
    data = mutated(lambda d: d["agents"]["writer"].update(model="retired-model"))
    loaded = WorkflowDefinition.from_dict(data, source="stored")
    assert loaded.agents["writer"].model == "retired-model"


def test_budget_is_read_and_round_trips(tmp_path):
    data = mutated(lambda d: d.update(budget={"usd": 0.5, "timeout": 60}))
    loaded = WorkflowDefinition.from_dict(data, source="file")
    assert loaded.budget.usd == Decimal("0.5") and loaded.budget.warn_at == Decimal("0.8")
    assert loaded.budget.timeout == 60 and loaded.budget.default_decision == "reject"
    again = WorkflowDefinition.from_dict(json.loads(json.dumps(loaded.to_dict())), source="copy")
    assert again.budget == loaded.budget


@pytest.mark.parametrize(("budget", "detail"), [
    ({"usd": 0}, "budget.usd: Input should be greater than 0"),
    ({"usd": -1}, "budget.usd: Input should be greater than 0"),
    ({"usd": "lots"}, "budget.usd: Input should be a valid decimal"),
    ({"usd": 1, "warn_at": 1.5}, "budget.warn_at: Input should be less than 1"),
    ({"usd": 1, "default_decision": "maybe"}, "budget.default_decision: Input should be 'approve' or 'reject'"),
    ({}, "budget.usd: Field required"),
])
def test_bad_budget_is_a_clear_error(tmp_path, budget, detail):
    err = load_error(tmp_path, mutated(lambda d: d.update(budget=budget)))
    assert err.detail == detail


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
#
# Every message is "<file>: [node '<id>': ]<path to the field>: <what is wrong>"; the tests
# compare ``detail`` (the part after the file and node) exactly, so the path is checked too.


def test_error_message_format(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").update(depends_on=["ghost"])))
    path = tmp_path / "tiny.yaml"
    assert str(err) == f"{path}: node 'left': depends_on: unknown node 'ghost'"
    assert err.node_id == "left"
    assert err.detail == "depends_on: unknown node 'ghost'"
    assert isinstance(err, ValueError)


def test_error_message_without_a_node(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: d["agents"]["critic"].update(model="")))
    path = tmp_path / "tiny.yaml"
    assert str(err) == f"{path}: agents.critic.model: String should not be blank"
    assert err.node_id is None


def test_cycle_names_a_node_on_the_cycle(tmp_path):
    def change(d):
        node(d, "draft")["depends_on"] = ["final"]

    err = load_error(tmp_path, mutated(change))
    assert "dependency cycle" in str(err)
    assert err.node_id in {"draft", "left", "right", "final"}
    assert f"node '{err.node_id}'" in str(err)
    # The whole cycle is shown, each node feeding the next (graphlib's CycleError).
    cycle = err.detail.removeprefix("dependency cycle: ").split(" -> ")
    assert cycle[0] == cycle[-1] == err.node_id
    deps = {n["id"]: n.get("depends_on", []) for n in mutated(change)["nodes"]}
    for before, after in itertools.pairwise(cycle):
        assert before in deps[after]


def test_self_dependency_is_a_cycle(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").update(depends_on=["left"])))
    assert err.node_id == "left"
    assert err.detail == "dependency cycle: left -> left"


def test_cycle_not_through_roots(tmp_path):
    def change(d):
        node(d, "left")["depends_on"] = ["draft", "right"]
        node(d, "right")["depends_on"] = ["left"]

    err = load_error(tmp_path, mutated(change))
    assert "dependency cycle" in str(err)
    assert err.node_id in {"left", "right"}
    assert err.detail in ("dependency cycle: left -> right -> left", "dependency cycle: right -> left -> right")


def test_topological_order_of_a_hand_built_cycle_is_an_error(tmp_path):
    definition = load_file(write(tmp_path, VALID))
    draft = definition.node("draft")
    looped = replace(
        definition,
        nodes=(replace(draft, depends_on=("final",)), *definition.nodes[1:]),
        source="by hand",
    )
    with pytest.raises(DefinitionError, match="by hand: dependency cycle: "):
        looped.topological_order()


def test_unknown_agent(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").update(agent="ghost")))
    assert err.node_id == "left"
    assert err.detail == "agent: unknown agent 'ghost'"


def test_agent_node_without_agent(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").pop("agent")))
    assert err.node_id == "left"
    assert err.detail == "agent: Field required"


def test_unknown_provider(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: d["agents"]["critic"].update(provider="anthropic")))
    assert err.detail == "agents.critic.provider: Input should be 'scripted', 'openai' or 'agui'"


def test_duplicate_node_id(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: d["nodes"].append(dict(node(d, "left")))))
    assert err.node_id == "left"
    assert err.detail == "id: duplicate node id"


def test_duplicate_dependency(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: node(d, "final").update(depends_on=["left", "left"])))
    assert err.node_id == "final"
    assert err.detail == "depends_on: lists 'left' twice"


@pytest.mark.parametrize(
    ("node_id", "options", "detail"),
    [
        ("draft", {"max_tokens": "ten"}, "options.max_tokens: Input should be a valid integer"),
        ("draft", {"max_tokens": 0}, "options.max_tokens: Input should be greater than or equal to 1"),
        ("draft", {"max_tokens": True}, "options.max_tokens: Input should be a valid integer"),
        ("draft", {"max_tokens": 2.0}, "options.max_tokens: Input should be a valid integer"),
        ("draft", {"fail": "yes"}, "options.fail: Input should be a valid boolean"),
        ("draft", {"thinking": 1}, "options.thinking: Input should be a valid boolean"),
        ("draft", {"temperature": "hot"}, "options.temperature: Input should be a valid number"),
        ("draft", {"temperature": True}, "options.temperature: Input should be a valid number"),
        ("draft", {"temperature": 3}, "options.temperature: Input should be less than or equal to 2"),
        ("draft", {"fail_after_tokens": -1}, "options.fail_after_tokens: Input should be greater than or equal to 0"),
        ("check", {"timeout": "5m"}, "options.timeout: Input should be a valid integer"),
        ("check", {"timeout": 0}, "options.timeout: Input should be greater than or equal to 1"),
        ("check", {"default_decision": "maybe"}, "options.default_decision: Input should be 'approve' or 'reject'"),
        ("check", {"max_rounds": 0}, "options.max_rounds: Input should be greater than or equal to 1"),
        ("check", {"reason": 5}, "options.reason: Input should be a valid string"),
        ("check", {"reviews": "Final"}, "options.reviews: String should match pattern '^[a-z][a-z0-9_]{0,39}$'"),
    ],
)
def test_bad_option_types(tmp_path, node_id, options, detail):
    err = load_error(tmp_path, mutated(lambda d: node(d, node_id).update(options=options)))
    assert err.node_id == node_id
    assert err.detail == detail


def test_options_are_typed_on_load(tmp_path):
    def change(d):
        node(d, "draft")["options"] = {"temperature": 1, "thinking": False, "fail_after_tokens": 0}
        node(d, "check")["options"] = {"default_decision": "reject", "timeout": 5, "max_rounds": 3}

    definition = load_file(write(tmp_path, mutated(change)))
    options = definition.node("draft").options
    assert options == {"temperature": 1.0, "thinking": False, "fail_after_tokens": 0}
    assert type(options["temperature"]) is float
    review = definition.node("check").options
    assert review["default_decision"] == "reject" and type(review["default_decision"]) is str
    assert (review["timeout"], review["max_rounds"]) == (5, 3)


def test_null_means_the_default(tmp_path):
    def change(d):
        node(d, "draft").update(depends_on=None, options=None, title=None)
        node(d, "check").update(options=None)
        node(d, "left").update(options={"max_tokens": None})

    definition = load_file(write(tmp_path, mutated(change)))
    draft = definition.node("draft")
    assert (draft.depends_on, draft.options, draft.title) == ((), {}, "Writer")
    assert definition.node("left").options == {}
    assert definition.node("check").options["reviews"] == "final"


def test_bad_field_types(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").update(depends_on="draft")))
    assert err.node_id == "left" and err.detail == "depends_on: Input should be a valid list"
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").update(depends_on=["draft", 5])))
    assert err.node_id == "left" and err.detail == "depends_on[1]: Input should be a valid string"
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").update(title=5)))
    assert err.node_id == "left" and err.detail == "title: Input should be a valid string"
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").update(title="  ")))
    assert err.node_id == "left" and err.detail == "title: String should not be blank"
    err = load_error(tmp_path, mutated(lambda d: d.update(nodes={"a": 1})))
    assert err.node_id is None and err.detail == "nodes: Input should be a valid list"
    err = load_error(tmp_path, mutated(lambda d: d["nodes"].append("summary")))
    assert err.node_id is None and err.detail == "nodes[5]: Input should be a mapping, got str"
    err = load_error(tmp_path, mutated(lambda d: d["agents"]["critic"].update(prompt=["x"])))
    assert err.detail == "agents.critic.prompt: Input should be a valid string"
    err = load_error(tmp_path, mutated(lambda d: d.update(name=True)))
    assert err.detail == "name: Input should be a valid string"
    err = load_error(tmp_path, mutated(lambda d: d.update(description=None)))
    assert err.detail == "description: Input should be a valid string"
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").update(type="robot")))
    assert err.node_id == "left" and err.detail == "type: Input should be 'agent' or 'human_review'"


@pytest.mark.parametrize(
    ("change", "node_id", "detail"),
    [
        (lambda d: d.update(nmae="typo"), None, "nmae: Extra inputs are not permitted"),
        (lambda d: d["agents"]["critic"].update(modle="x"), None, "agents.critic.modle: Extra inputs are not permitted"),
        (lambda d: node(d, "left").update(depends="draft"), "left", "depends: Extra inputs are not permitted"),
        (
            lambda d: node(d, "draft").update(options={"max_token": 5}),
            "draft",
            "options.max_token: Extra inputs are not permitted",
        ),
        (
            lambda d: node(d, "check").update(options={"timout": 5}),
            "check",
            "options.timout: Extra inputs are not permitted",
        ),
        (
            lambda d: node(d, "check").update(options={"max_tokens": 5}),
            "check",
            "options.max_tokens: Extra inputs are not permitted",
        ),
    ],
)
def test_unknown_keys_are_errors(tmp_path, change, node_id, detail):
    err = load_error(tmp_path, mutated(change))
    assert err.node_id == node_id
    assert err.detail == detail


def test_duplicate_yaml_key_is_an_error(tmp_path):
    path = tmp_path / "tiny.yaml"
    text = yaml.safe_dump(VALID, sort_keys=False)
    path.write_text(text + "name: Second name\n")
    with pytest.raises(DefinitionError, match="duplicate key 'name'"):
        load_file(path)


def test_missing_required_keys(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: d["agents"]["critic"].pop("prompt")))
    assert err.detail == "agents.critic.prompt: Field required"
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").pop("type")))
    assert err.node_id == "left" and err.detail == "type: Field required"
    err = load_error(tmp_path, mutated(lambda d: d.pop("agents")))
    assert err.detail == "agents: Field required"


def test_at_least_one_node_and_agent(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: d.update(nodes=[])))
    assert err.detail == "nodes: List should have at least 1 item after validation, not 0"
    err = load_error(tmp_path, mutated(lambda d: d.update(agents={})))
    assert err.detail == "agents: Dictionary should have at least 1 item after validation, not 0"


@pytest.mark.parametrize("slug", ["Demo", "-demo", "demo_1", "a" * 51, ""])
def test_bad_slug(tmp_path, slug):
    err = load_error(tmp_path, mutated(lambda d: d.update(slug=slug)))
    assert err.detail == "slug: String should match pattern '^[a-z0-9][a-z0-9-]{0,49}$'"


def test_slug_must_match_file_name(tmp_path):
    path = write(tmp_path, VALID, name="other")
    with pytest.raises(DefinitionError, match=r"does not match the file name 'other\.yaml'"):
        load_file(path)


@pytest.mark.parametrize("bad_id", ["Left", "1st", "with-dash", "x" * 41])
def test_bad_node_id(tmp_path, bad_id):
    err = load_error(tmp_path, mutated(lambda d: node(d, "left").update(id=bad_id)))
    assert err.node_id is None  # not usable as a name: the message says where the node is
    assert err.detail == "nodes[1].id: String should match pattern '^[a-z][a-z0-9_]{0,39}$'"


def test_bad_agent_id(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: d["agents"].update(Critic=d["agents"]["critic"])))
    assert err.detail == "agents.Critic (key): String should match pattern '^[a-z][a-z0-9_]{0,39}$'"


@pytest.mark.parametrize(
    ("options", "depends_on", "detail"),
    [
        ({"reviews": "ghost"}, ["final"], "options.reviews: unknown node 'ghost'"),
        ({"reviews": "left"}, ["final"], None),  # an ancestor further up is fine
        (
            {},
            ["left", "right"],
            "options.reviews: required when the review does not have exactly one dependency "
            "(it cannot guess which agent node it reviews)",
        ),
        ({"reviews": "final"}, [], "options.reviews: 'final' is not upstream of this review (add it to depends_on)"),
        ({"reviews": "final"}, ["draft"], "options.reviews: 'final' is not upstream of this review (add it to depends_on)"),
        ({"reviews": "other_review"}, ["other_review"], "options.reviews: 'other_review' is not an agent node"),
    ],
)
def test_review_target(tmp_path, options, depends_on, detail):
    def change(d):
        d["nodes"].append({"id": "other_review", "type": "human_review", "depends_on": ["draft"]})
        node(d, "check").update(options=options, depends_on=depends_on)

    data = mutated(change)
    if detail is None:
        assert load_file(write(tmp_path, data)).node("check").options["reviews"] == "left"
        return
    err = load_error(tmp_path, data)
    assert err.node_id == "check"
    assert err.detail == detail


def test_review_nodes_take_no_agent(tmp_path):
    err = load_error(tmp_path, mutated(lambda d: node(d, "check").update(agent="writer")))
    assert err.node_id == "check" and err.detail == "agent: Extra inputs are not permitted"


def test_invalid_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("slug: [unclosed\n")
    with pytest.raises(DefinitionError, match="invalid YAML"):
        load_file(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(DefinitionError, match="Input should be a mapping, got list"):
        load_file(path)
    path.write_text("")
    with pytest.raises(DefinitionError, match="Input should be a mapping, got null"):
        load_file(path)


def test_from_dict_errors_name_the_source():
    data = mutated(lambda d: node(d, "draft").update(options={"max_tokens": 0}))
    with pytest.raises(DefinitionError) as info:
        WorkflowDefinition.from_dict(data, source="session 7")
    assert str(info.value) == "session 7: node 'draft': options.max_tokens: Input should be greater than or equal to 1"


def test_node_spec_is_frozen(tmp_path):
    definition = load_file(write(tmp_path, VALID))
    spec: NodeSpec = definition.node("draft")
    with pytest.raises(AttributeError):
        spec.title = "changed"  # type: ignore[misc]


# --------------------------------------------------------------------------- system check
# A full ``check`` also runs Django's model checks, which ask the (SQLite) database about
# its features, hence django_db.


@pytest.mark.django_db
def test_system_check_passes_with_the_shipped_files():
    call_command("check", stdout=io.StringIO())


@pytest.mark.django_db
def test_system_check_passes_with_a_good_directory(settings, tmp_path):
    settings.WORKFLOW_DIR = tmp_path
    write(tmp_path, VALID)
    assert check_workflow_definitions(None) == []
    call_command("check", stdout=io.StringIO())


@pytest.mark.django_db
def test_system_check_stops_on_a_broken_file(settings, tmp_path):
    settings.WORKFLOW_DIR = tmp_path
    write(tmp_path, VALID)
    broken = mutated(lambda d: node(d, "draft").update(options={"max_tokens": 0}))
    path = write(tmp_path, {**broken, "slug": "broken"}, name="broken")
    with pytest.raises(SystemCheckError) as info:
        call_command("check", stdout=io.StringIO())
    text = str(info.value)
    assert "(workflows.E001)" in text
    assert f"{path}: node 'draft': options.max_tokens: Input should be greater than or equal to 1" in text
    [error] = check_workflow_definitions(None)
    assert error.id == "workflows.E001" and error.level == checks.ERROR


def test_system_check_stops_on_an_empty_directory(settings, tmp_path):
    settings.WORKFLOW_DIR = tmp_path
    with pytest.raises(SystemCheckError, match="no workflow files found"):
        call_command("check", tags=["workflows"], stdout=io.StringIO())


def test_system_check_runs_only_when_asked_for_workflows(settings, tmp_path):
    settings.WORKFLOW_DIR = tmp_path  # empty: an error if checked
    assert check_workflow_definitions([apps.get_app_config("realtime")]) == []
    assert len(check_workflow_definitions([apps.get_app_config("workflows")])) == 1
