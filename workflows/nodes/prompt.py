"""What an agent sees when it answers: upstream answers, review notes, users' messages, and
(on a retry) its own previous answer with the reviewer's comment."""

from __future__ import annotations

from realtime.vocabulary import NodeType
from workflows.definitions import NodeSpec, WorkflowDefinition
from workflows.nodes.base import RunContext
from workflows.providers import CompletionRequest, effective_model


def upstream(definition: WorkflowDefinition, node: NodeSpec) -> list[str]:
    """Direct dependencies, looking through review nodes to what they reviewed."""
    result: list[str] = []
    for dep in node.depends_on:
        spec = definition.node(dep)
        target = spec.options["reviews"] if spec.type == NodeType.HUMAN_REVIEW else dep
        if target not in result:
            result.append(target)
    return result


async def build_request(
    run: RunContext, node: NodeSpec, *, feedback: list[str], before_message: int
) -> CompletionRequest:
    """The completion request of one round of ``node`` (an agent node)."""
    agent = node.agent
    assert agent is not None
    messages: list[dict[str, str]] = []
    for dep in upstream(run.definition, node):
        title = run.definition.node(dep).title
        messages.append(
            {"role": "user", "content": f"Output of {title}:\n{run.outputs.get(dep, '')}"}
        )
    for dep in node.depends_on:
        if run.definition.node(dep).type == NodeType.HUMAN_REVIEW:
            comments = await run.store.review_comments(session_id=run.session_id, node_id=dep)
            messages.extend(
                {"role": "user", "content": f"The reviewer approved with this note: {c}"}
                for c in comments
            )
    # Users' messages stored before this node started (its message row) are its context.
    for item in await run.store.user_messages_before(
        session_id=run.session_id, before_id=before_message
    ):
        messages.append({"role": "user", "content": f"{item['user']} says: {item['text']}"})
    if feedback and run.outputs.get(node.id):
        messages.append({"role": "assistant", "content": run.outputs[node.id]})
    for comment in feedback:
        messages.append({"role": "user", "content": f"The reviewer rejected your answer: {comment}"})
    if not messages:
        messages.append({"role": "user", "content": "Open the meeting."})
    return CompletionRequest(
        model=effective_model(agent.provider, agent.model),
        system=f"You are {agent.name}, {agent.role}.\n{agent.prompt}",
        messages=messages,
        options=dict(node.options),
        node_id=node.id,
        agent_id=agent.id,
        agui=agent.agui,
    )
