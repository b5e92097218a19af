"""The default provider: deterministic, offline text streamed at a configurable pace.

It exists so the whole product (parallel branches, reviews, replays, costs) can be run,
demoed, tested and benchmarked without a network or an API key. Text is picked from a small
phrase bank with a generator seeded by a hash of the request (model, system prompt,
messages, node and agent id), and a few words from the prompt and context are woven in, so
different agents and contexts read differently while the same request always streams the
same tokens.

Tokens follow the rule in ``workflows.providers.base``: one whitespace-separated word plus
the whitespace after it (none after the very last word); each yielded Chunk is one token.
``output_tokens`` = streamed tokens (thinking + answer), of which ``reasoning_tokens`` =
the thinking tokens; ``input_tokens`` = words in the system prompt and all messages (no
cache: cached input and cache writes are 0).

Options read from ``request.options``: ``thinking`` (default true: a few sentences of
reasoning are streamed first), ``max_tokens`` (the answer is exactly this many tokens;
default: whole sentences totalling 60-120 tokens, chosen by the seed; thinking tokens are
not counted), ``fail`` (raise
``ProviderError("scripted failure")`` before the first chunk) and ``fail_after_tokens``
(raise after that many chunks, if the stream is that long).

Tools (the documented deterministic rule, so demos and tests show tool use without a key):
when the request offers tools and the conversation holds fewer than
``options.scripted_tool_rounds`` (default 1) earlier tool-calling turns, the model does not
answer yet: it streams its thinking, one lead-in sentence ("I will check this with
calculator and current_time."), then calls tools. Which calls: ``options.scripted_tool_calls``
if given (a list of ``{name, arguments}``, arguments as an object or as raw text, sent as
is: that is how tests make a model name an unknown tool or send broken JSON), else every
offered tool once, in the order offered, with arguments built from its JSON schema: each
required property takes its first ``examples`` entry, else its ``default``, else by type a
topic phrase of the conversation (string), 2 (integer), 2.5 (number), true, [] or {}.
Each call streams as one ToolCallDelta naming the tool, then its JSON arguments in three
pieces. Once results are in the conversation the model answers as usual, opening with
"The <tool> tool returned <first 80 characters>." for the first result it got.

Pace: ``settings.SCRIPTED_TOKENS_PER_SECOND`` read when the stream starts; token *i*
(0-based) is released at ``start + (i + 1) / rate``, so N tokens take N / rate seconds. A
rate <= 0 streams as fast as possible but still yields to the event loop after every token.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings

from workflows.providers.base import (
    Chunk,
    CompletionRequest,
    ProviderError,
    ToolCallDelta,
    Usage,
    input_tokens,
    word_count,
)
from workflows.vocabulary import ProviderName

_THINKING = (
    "Let me first work out what is really being asked about {a}.",
    "The context mentions {a} and {b}, so I should connect the two.",
    "I need to separate what we know about {a} from what we only assume.",
    "A useful angle is to ask what would change if our view of {b} turned out to be wrong.",
    "I should check whether {a} and {b} are linked or independent.",
    "The earlier contributions lean heavily on {a}; I will test that assumption.",
    "Before answering I will list the two or three points that matter most.",
    "It is worth keeping the answer short and making every claim about {b} concrete.",
)

_ANSWER = (
    "My main point concerns {a}.",
    "The evidence so far suggests that {a} matters more than {b}.",
    "We should treat the case for {a} as a hypothesis until we have data on {b}.",
    "I recommend a small, time-boxed experiment focused on {a}.",
    "The biggest risk is underestimating the effort behind {b}.",
    "If we get {a} right, most of the concerns about {b} become manageable.",
    "Three things follow: clarify {a}, measure {b}, and agree on an owner for each.",
    "Compared with the alternatives, this approach keeps {a} simple and reversible.",
    "I would not commit budget before the open questions about {b} are answered.",
    "Customers will judge this mostly by how {a} works in everyday use.",
    "A phased rollout lets us learn about {b} without betting everything on it.",
    "The numbers are uncertain, but the direction on {a} is clear.",
    "We should write down what success looks like for {a} before we start.",
    "Dependencies on {b} need to be confirmed with the teams that own them.",
    "In short, {a} looks promising, provided we keep a close eye on {b}.",
)

_FALLBACK_TOPICS = ("the proposal", "the plan", "the timeline", "the budget", "the users")

# Function words and the instruction vocabulary of prompts ("assess", "summarise", ...):
# echoing those would read as noise rather than as engagement with the topic.
_STOPWORDS = frozenset(
    """about above after again against also any are because been before being below between
    both but can could did does doing down during each few for from further had has have
    having here how into its itself just more most much must not now off once only other our
    ours out over own same should some such than that the their theirs them then there these
    they this those through too under until very was were what when where which while who
    whom why will with would you your yours shall make made give given every please answer
    write short brief assess analyst review summary summarise summarize describe explain
    list name state restate topic research provide based concrete careful clear clearly
    briefly where sensible specialist specialists meeting agent agents question questions
    point points view views look looks take takes keep keeps want wants need needs like
    into onto upon within without among really thing things something""".split()
)

_CLAUSE_RE = re.compile(r"[.,;:!?()\[\]{}\"/\n]+")
_WORD_RE = re.compile(r"^[A-Za-z][A-Za-z-]*$")


def _seed(request: CompletionRequest) -> random.Random:
    payload = json.dumps(
        [request.model, request.system, request.messages, request.node_id, request.agent_id],
        sort_keys=True,
        ensure_ascii=False,
    )
    digest = hashlib.sha256(payload.encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _content_word(word: str) -> bool:
    return len(word) >= 4 and bool(_WORD_RE.match(word)) and word.lower() not in _STOPWORDS


def _topics(request: CompletionRequest) -> list[str]:
    """Short phrases from the context, most recent message first, so answers echo it.

    Two adjacent content words ("flat pricing") are preferred over single words."""
    texts = [message.get("content") or "" for message in reversed(request.messages)]
    texts.append(request.system)
    pairs: dict[str, None] = {}
    singles: dict[str, None] = {}
    for text in texts:
        for clause in _CLAUSE_RE.split(text):
            words = [word.strip("-").lower() for word in clause.split()]
            for index, word in enumerate(words):
                if not _content_word(word):
                    continue
                if len(word) >= 5:
                    singles.setdefault(word, None)
                if index + 1 < len(words) and _content_word(words[index + 1]):
                    pairs.setdefault(f"{word} {words[index + 1]}", None)
    topics = [*list(pairs)[:8], *list(singles)[:8]]
    return topics or list(_FALLBACK_TOPICS)


def _sentence(rng: random.Random, bank: tuple[str, ...], topics: list[str]) -> str:
    first = rng.choice(topics)
    second = rng.choice([topic for topic in topics if topic != first] or topics)
    return rng.choice(bank).format(a=first, b=second)


def _tokens(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text)


def script(request: CompletionRequest) -> tuple[list[str], list[str]]:
    """The (thinking, answer) tokens for a request; pure, so tests and benchmarks can
    predict a stream without running it."""
    rng = _seed(request)
    topics = _topics(request)
    thinking: list[str] = []
    if request.options.get("thinking", True) is not False:
        sentences = [_sentence(rng, _THINKING, topics) for _ in range(rng.randint(2, 4))]
        thinking = _tokens(" ".join(sentences) + " ")
    max_tokens = request.options.get("max_tokens")
    # Without max_tokens: whole sentences, 60-120 tokens. With it: exactly max_tokens.
    target = int(max_tokens) if max_tokens else rng.randint(60, 120)
    answer: list[str] = []
    sentence_count = 0
    while len(answer) < target:
        sentence_count += 1
        end = "\n\n" if sentence_count % 3 == 0 else " "
        sentence = _tokens(_sentence(rng, _ANSWER, topics) + end)
        if not max_tokens and len(answer) + len(sentence) > 120:
            break
        answer.extend(sentence)
    if max_tokens:
        answer = answer[:target]
    answer[-1] = answer[-1].rstrip()
    return thinking, answer


def _example(prop: dict[str, Any], topics: list[str]) -> Any:
    if prop.get("examples"):
        return prop["examples"][0]
    if "default" in prop:
        return prop["default"]
    kind = prop.get("type")
    return {"string": topics[0], "integer": 2, "number": 2.5, "boolean": True, "array": [],
            "object": {}}.get(kind if isinstance(kind, str) else "string")


def tool_calls(request: CompletionRequest) -> list[tuple[str, str]]:
    """The (tool name, JSON arguments text) the scripted model calls now; [] = it answers."""
    if not request.tools:
        return []
    done = sum(1 for message in request.messages if message.get("tool_calls"))
    if done >= int(request.options.get("scripted_tool_rounds", 1)):
        return []
    given = request.options.get("scripted_tool_calls")
    if given:
        return [
            (call["name"], call["arguments"] if isinstance(call["arguments"], str)
             else json.dumps(call["arguments"]))
            for call in given
        ]
    topics = _topics(request)
    calls = []
    for tool in request.tools:
        schema = tool.get("parameters") or {}
        props = schema.get("properties") or {}
        arguments = {name: _example(props.get(name) or {}, topics) for name in schema.get("required") or ()}
        calls.append((tool["name"], json.dumps(arguments)))
    return calls


def _first_result(request: CompletionRequest) -> str:
    names = {call["id"]: call["name"] for m in request.messages for call in m.get("tool_calls") or ()}
    for message in request.messages:
        if message.get("role") == "tool":
            text = " ".join(str(message.get("content") or "").split())[:80]
            return f"The {names.get(message.get('tool_call_id'), 'tool')} tool returned {text}. "
    return ""


def _pieces(text: str, count: int = 3) -> list[str]:
    size = max(1, -(-len(text) // count))
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


class ScriptedProvider:
    name = ProviderName.SCRIPTED

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk | ToolCallDelta | Usage]:
        options = request.options
        if options.get("fail"):
            raise ProviderError("scripted failure", retryable=False)
        fail_after = options.get("fail_after_tokens")
        thinking, answer = script(request)
        items: list[Chunk | ToolCallDelta] = [Chunk(text, True) for text in thinking]
        calls = tool_calls(request)
        output = len(thinking)
        if calls:
            names = " and ".join(dict.fromkeys(name for name, _ in calls))
            lead = _tokens(f"I will check this with {names}. ")
            items += [Chunk(text, False) for text in lead]
            for index, (name, arguments) in enumerate(calls):
                items.append(ToolCallDelta(index=index, name=name))
                items += [ToolCallDelta(index=index, arguments=p) for p in _pieces(arguments)]
            output += len(lead) + sum(word_count(arguments) for _, arguments in calls)
        else:
            opening = _tokens(_first_result(request))
            items += [Chunk(text, False) for text in opening + answer]
            output += len(opening) + len(answer)
        rate = float(settings.SCRIPTED_TOKENS_PER_SECOND)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index, item in enumerate(items):
            if fail_after is not None and index >= fail_after:
                raise ProviderError(f"scripted failure after {fail_after} tokens", retryable=False)
            if rate > 0:
                await asyncio.sleep(max(0.0, start + (index + 1) / rate - loop.time()))
            else:
                await asyncio.sleep(0)
            yield item
        yield Usage(input_tokens=input_tokens(request), output_tokens=output,
                    reasoning_tokens=len(thinking))
