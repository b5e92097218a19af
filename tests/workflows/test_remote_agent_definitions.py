"""The workflow file's ``provider: agui`` and ``agui`` block: what a file may say about a
remote AG-UI agent, and the errors (naming file and field) when it says it wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from workflows.definitions import AguiSpec, DefinitionError, WorkflowDefinition, load_file
from workflows.providers import effective_provider_name


def remote_file(**agent: Any) -> dict[str, Any]:
    analyst = {"name": "Analyst", "role": "Weighs the numbers", "model": "scripted-small",
               "prompt": "You weigh the numbers.", "provider": "agui",
               "agui": {"url": "https://agents.example.com/analyst",
                        "headers": {"Authorization": "Bearer ${AGUI_TOKEN}"}}}
    analyst.update(agent)
    return {"slug": "tiny", "name": "Tiny", "agents": {"analyst": analyst},
            "nodes": [{"id": "numbers", "type": "agent", "agent": "analyst"}]}


def load(tmp_path: Path, data: dict[str, Any]) -> WorkflowDefinition:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_file(path)


def error(tmp_path: Path, data: dict[str, Any]) -> str:
    with pytest.raises(DefinitionError) as info:
        load(tmp_path, data)
    assert str(tmp_path / "tiny.yaml") in str(info.value)
    return info.value.detail


def test_a_remote_agent_loads_with_its_defaults_and_round_trips(tmp_path):
    definition = load(tmp_path, remote_file())
    agent = definition.agents["analyst"]
    assert agent.agui == AguiSpec(url="https://agents.example.com/analyst",
                                  headers=(("Authorization", "Bearer ${AGUI_TOKEN}"),),
                                  interrupt_timeout=300, interrupt_default="reject")
    stored = definition.to_dict()
    assert stored["agents"]["analyst"]["agui"]["headers"] == {"Authorization": "Bearer ${AGUI_TOKEN}"}
    assert WorkflowDefinition.from_dict(stored, source="copy") == definition


def test_llm_provider_never_retargets_a_remote_agent(settings):
    settings.LLM_PROVIDER = "openai"
    assert effective_provider_name("agui") == "agui"
    assert effective_provider_name("scripted") == "openai"


@pytest.mark.parametrize(("change", "detail"), [
    ({"agui": None}, "agents.analyst: provider agui and an agui endpoint go together (give both or neither)"),
    ({"provider": "scripted"}, "agents.analyst: provider agui and an agui endpoint go together (give both or neither)"),
    ({"tools": ["calculator"]}, "agents.analyst: a remote AG-UI agent runs its own tools: remove tools"),
    ({"agui": {"url": "ftp://agents.example.com/x"}}, "agents.analyst.agui.url: String should match pattern"),
    ({"agui": {"url": "https://user:pw@agents.example.com/x"}}, "agents.analyst.agui.url: String should match pattern"),
    ({"agui": {"url": "https://a.example.com/", "headers": {"Bad Header": "x"}}},
     "agents.analyst.agui.headers: 'Bad Header' is not an HTTP header name"),
    ({"agui": {"url": "https://a.example.com/", "headers": {"X-Key": "a\nb"}}},
     "agents.analyst.agui.headers: the value of 'X-Key' spans lines"),
    ({"agui": {"url": "https://a.example.com/", "token": "x"}}, "agents.analyst.agui.token: Extra inputs are not permitted"),
    ({"agui": {"url": "https://a.example.com/", "interrupt_default": "maybe"}},
     "agents.analyst.agui.interrupt_default: Input should be 'approve' or 'reject'"),
])
def test_what_a_file_gets_wrong_about_a_remote_agent(tmp_path, change, detail):
    data = remote_file()
    agent = data["agents"]["analyst"]
    for key, value in change.items():
        if value is None:
            del agent[key]
        else:
            agent[key] = value
    assert error(tmp_path, data).startswith(detail)
