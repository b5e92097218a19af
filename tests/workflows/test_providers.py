import asyncio
import time

import pytest

from tests.workflows.fake_openai import DETAILED_USAGE, FakeOpenAI
from workflows.providers import effective_model, effective_provider_name, get_provider
from workflows.providers.base import Chunk, CompletionRequest, ProviderError, Usage, WordCounter
from workflows.providers.openai_compat import OpenAICompatProvider, server_usage
from workflows.providers.scripted import ScriptedProvider, script

SECRET = "sk-test-secret-key-0123456789"


def make_request(**overrides) -> CompletionRequest:
    fields = {
        "model": "scripted-small",
        "system": "You are a careful market analyst for electric bicycles.",
        "messages": [{"role": "user", "content": "Assess demand for cargo bikes in Lisbon."}],
        "options": {},
        "node_id": "market",
        "agent_id": "analyst",
    }
    fields.update(overrides)
    return CompletionRequest(**fields)


async def collect(provider, request) -> tuple[list[Chunk], list[Usage]]:
    chunks: list[Chunk] = []
    usages: list[Usage] = []
    async for item in provider.stream(request):
        if isinstance(item, Usage):
            usages.append(item)
        else:
            assert not usages, "a Chunk arrived after the Usage"
            chunks.append(item)
    return chunks, usages


async def collect_until_error(provider, request) -> tuple[list[Chunk], ProviderError]:
    chunks: list[Chunk] = []
    with pytest.raises(ProviderError) as info:
        async for item in provider.stream(request):
            assert isinstance(item, Chunk)
            chunks.append(item)
    return chunks, info.value


@pytest.fixture
def fast(settings):
    settings.SCRIPTED_TOKENS_PER_SECOND = 0
    return settings


# --------------------------------------------------------------------------- scripted


async def test_scripted_is_deterministic(fast):
    first, usage1 = await collect(ScriptedProvider(), make_request())
    second, usage2 = await collect(ScriptedProvider(), make_request())
    assert first == second
    assert usage1 == usage2


async def test_scripted_text_depends_on_prompt_and_context(fast):
    base, _ = await collect(ScriptedProvider(), make_request())
    other_system, _ = await collect(ScriptedProvider(), make_request(system="You are a lawyer."))
    other_context, _ = await collect(
        ScriptedProvider(),
        make_request(messages=[{"role": "user", "content": "Review the hiring plan."}]),
    )
    text = "".join(c.text for c in base)
    assert text != "".join(c.text for c in other_system)
    assert text != "".join(c.text for c in other_context)


async def test_scripted_weaves_in_context_words(fast):
    request = make_request(system="", messages=[{"role": "user", "content": "zeppelin"}])
    chunks, _ = await collect(ScriptedProvider(), request)
    answer = "".join(c.text for c in chunks if not c.is_thinking)
    assert "zeppelin" in answer


async def test_scripted_token_rule(fast):
    request = make_request(
        messages=[
            {"role": "user", "content": "one two three"},
            {"role": "assistant", "content": "four  five\nsix"},
        ]
    )
    chunks, usages = await collect(ScriptedProvider(), request)
    assert len(usages) == 1
    usage = usages[0]
    # every chunk is exactly one word plus the whitespace after it
    for chunk in chunks:
        assert len(chunk.text.split()) == 1
        assert chunk.text[0] not in " \n"
    assert all(c.text[-1] in " \n" for c in chunks[:-1])
    assert chunks[-1].text == chunks[-1].text.rstrip()
    assert usage.output_tokens == len(chunks)
    assert usage.output_tokens == len("".join(c.text for c in chunks).split())
    # system has 9 words, messages 3 + 3
    assert usage.input_tokens == 9 + 3 + 3
    assert usage.estimated is False


async def test_scripted_thinking_comes_first(fast):
    chunks, _ = await collect(ScriptedProvider(), make_request())
    flags = [c.is_thinking for c in chunks]
    assert flags[0] is True
    first_answer = flags.index(False)
    assert all(flags[:first_answer]) and not any(flags[first_answer:])
    no_thinking, usages = await collect(ScriptedProvider(), make_request(options={"thinking": False}))
    assert not any(c.is_thinking for c in no_thinking)
    assert usages[0].output_tokens == len(no_thinking)


async def test_scripted_length(fast):
    chunks, _ = await collect(ScriptedProvider(), make_request(options={"max_tokens": 7, "thinking": False}))
    assert len(chunks) == 7
    for node_id in ("a", "b", "c", "d"):
        thinking, answer = script(make_request(node_id=node_id))
        assert 60 <= len(answer) <= 120
        assert answer[-1].endswith(".")  # whole sentences when no max_tokens is set
        assert 5 <= len(thinking) <= 80


async def test_scripted_fail_before_first_chunk(fast):
    chunks, error = await collect_until_error(ScriptedProvider(), make_request(options={"fail": True}))
    assert chunks == []
    assert error.message == "scripted failure"
    assert error.retryable is False


async def test_scripted_fail_after_tokens(fast):
    chunks, error = await collect_until_error(
        ScriptedProvider(), make_request(options={"fail_after_tokens": 5})
    )
    assert len(chunks) == 5
    assert error.retryable is False
    assert "after 5 tokens" in error.message


async def test_scripted_pace(settings):
    settings.SCRIPTED_TOKENS_PER_SECOND = 200
    request = make_request(options={"max_tokens": 20, "thinking": False})
    started = time.monotonic()
    chunks, _ = await collect(ScriptedProvider(), request)
    elapsed = time.monotonic() - started
    assert len(chunks) == 20
    assert 0.09 <= elapsed < 0.5


async def test_scripted_pace_setting_is_read_per_call(settings):
    request = make_request(options={"max_tokens": 20, "thinking": False})
    settings.SCRIPTED_TOKENS_PER_SECOND = 0
    started = time.monotonic()
    await collect(ScriptedProvider(), request)
    assert time.monotonic() - started < 0.05


async def test_scripted_unpaced_streams_still_interleave(fast):
    order: list[str] = []

    async def run(name: str) -> None:
        async for item in ScriptedProvider().stream(
            make_request(node_id=name, options={"max_tokens": 10, "thinking": False})
        ):
            if isinstance(item, Chunk):
                order.append(name)

    await asyncio.gather(run("a"), run("b"))
    assert order.count("a") == order.count("b") == 10
    assert order[:4] == ["a", "b", "a", "b"]  # neither stream hogs the loop


async def test_scripted_cancellation_is_prompt(settings):
    settings.SCRIPTED_TOKENS_PER_SECOND = 5
    got_first = asyncio.Event()

    async def consume() -> None:
        async for _ in ScriptedProvider().stream(make_request()):
            got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), 2)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 0.1


# --------------------------------------------------------------------------- lookup


def test_get_provider_by_name(settings):
    settings.LLM_PROVIDER = ""
    assert isinstance(get_provider("scripted"), ScriptedProvider)
    assert isinstance(get_provider("openai"), OpenAICompatProvider)
    with pytest.raises(ValueError, match="unknown LLM provider"):
        get_provider("nope")


def test_llm_provider_setting_overrides(settings):
    settings.LLM_PROVIDER = "openai"
    settings.OPENAI_MODEL = ""
    assert isinstance(get_provider("scripted"), OpenAICompatProvider)
    assert effective_provider_name("scripted") == "openai"
    assert effective_model("scripted", "scripted-small") == "scripted-small"
    settings.OPENAI_MODEL = "deepseek-chat"
    assert effective_model("scripted", "scripted-small") == "deepseek-chat"
    settings.LLM_PROVIDER = "scripted"
    assert isinstance(get_provider("openai"), ScriptedProvider)
    assert effective_model("openai", "gpt-4o") == "gpt-4o"


# --------------------------------------------------------------------------- openai


@pytest.fixture
def fake(settings):
    server = FakeOpenAI().start()
    settings.LLM_PROVIDER = ""
    settings.OPENAI_BASE_URL = server.base_url
    settings.OPENAI_API_KEY = SECRET
    settings.OPENAI_MODEL = ""
    settings.LLM_TIMEOUT_SECONDS = 2.0
    settings.LLM_MAX_RETRIES = 2
    yield server
    server.stop()


def openai_provider(backoff: float = 0.01) -> OpenAICompatProvider:
    return OpenAICompatProvider(backoff_base=backoff)


def oa_request(**overrides) -> CompletionRequest:
    return make_request(model="gpt-4o-mini", **overrides)


async def test_openai_normal_stream(fake):
    request = oa_request(options={"max_tokens": 50, "temperature": 0.2, "fail": True})
    chunks, usages = await collect(openai_provider(), request)
    assert [c.text for c in chunks] == fake.answer
    assert not any(c.is_thinking for c in chunks)
    assert usages == [Usage(input_tokens=17, output_tokens=7)]
    [sent] = fake.requests
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == f"Bearer {SECRET}"
    body = sent["json"]
    assert body["model"] == "gpt-4o-mini"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": request.system},
        *request.messages,
    ]
    assert body["max_tokens"] == 50
    assert body["temperature"] == 0.2
    assert "fail" not in body


async def test_openai_usage_by_type_cached_and_reasoning_are_parts_never_on_top(fake):
    fake.usage = DETAILED_USAGE
    _, usages = await collect(openai_provider(), oa_request())
    assert usages == [Usage(input_tokens=17, output_tokens=7, cached_input_tokens=12,
                            reasoning_tokens=3)]


def test_server_usage_reads_only_what_the_server_reports():
    assert server_usage({"prompt_tokens": 5, "completion_tokens": 2}) == Usage(5, 2)
    assert server_usage({"prompt_tokens": 5, "completion_tokens": 2,
                         "prompt_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 1}}) == Usage(
        5, 2, cached_input_tokens=4, cache_write_tokens=1)
    assert server_usage({"completion_tokens": 2}) == Usage(0, 2)  # no prompt_tokens: no guess


def test_word_counter_counts_a_word_cut_across_pieces_once():
    counter = WordCounter()
    for piece in ["Hel", "lo ", "wor", "ld", "!", " and", " more "]:
        counter.add(piece)
    assert counter.words == len("Hello world! and more ".split()) == 4


async def test_openai_model_setting_overrides_agent_model(fake, settings):
    settings.OPENAI_MODEL = "deepseek-chat"
    await collect(openai_provider(), oa_request())
    assert fake.requests[0]["json"]["model"] == "deepseek-chat"


async def test_openai_reasoning_content_becomes_thinking(fake):
    fake.modes = ["thinking"]
    chunks, _ = await collect(openai_provider(), oa_request())
    assert [c.text for c in chunks if c.is_thinking] == fake.reasoning
    assert [c.text for c in chunks if not c.is_thinking] == fake.answer
    assert [c.is_thinking for c in chunks] == [True] * 3 + [False] * 4


async def test_openai_missing_usage_is_estimated(fake):
    fake.modes = ["no_usage"]
    request = oa_request(messages=[{"role": "user", "content": "two words"}])
    chunks, usages = await collect(openai_provider(), request)
    assert len(chunks) == 4
    # "Hello there, world!" = 3 words; system 9 words + "two words"
    assert usages == [Usage(input_tokens=11, output_tokens=3, estimated=True)]


async def test_openai_500_is_retried_then_fails(fake):
    fake.default_mode = "error500"
    started = time.monotonic()
    chunks, error = await collect_until_error(openai_provider(backoff=0.05), oa_request())
    elapsed = time.monotonic() - started
    assert chunks == []
    assert len(fake.requests) == 3  # first try + LLM_MAX_RETRIES
    assert error.retryable is True
    assert "HTTP 500" in error.message
    assert elapsed >= 0.05 + 0.1  # backoff 0.05 * 2**0, then 0.05 * 2**1


async def test_openai_no_retries_when_disabled(fake, settings):
    settings.LLM_MAX_RETRIES = 0
    fake.default_mode = "error500"
    await collect_until_error(openai_provider(), oa_request())
    assert len(fake.requests) == 1


async def test_openai_429_then_ok(fake):
    fake.modes = ["rate_limit", "normal"]
    chunks, usages = await collect(openai_provider(), oa_request())
    assert [c.text for c in chunks] == fake.answer
    assert usages == [Usage(input_tokens=17, output_tokens=7)]
    assert [r["mode"] for r in fake.requests] == ["rate_limit", "normal"]


async def test_openai_4xx_is_not_retried_and_hides_the_key(fake):
    fake.default_mode = "error400"
    chunks, error = await collect_until_error(openai_provider(), oa_request())
    assert chunks == []
    assert len(fake.requests) == 1
    assert error.retryable is False
    assert "HTTP 400" in error.message
    assert "Invalid request" in error.message  # the server's reason is kept...
    assert SECRET not in error.message  # ...without the key it echoed
    assert SECRET not in str(error)


async def test_openai_broken_stream_after_chunks_is_final(fake):
    fake.modes = ["broken", "normal"]
    chunks, error = await collect_until_error(openai_provider(), oa_request())
    assert [c.text for c in chunks] == fake.answer[:2]
    assert error.retryable is False
    assert "lost" in error.message
    assert len(fake.requests) == 1  # never retried once text was shown


async def test_openai_hang_times_out(fake, settings):
    settings.LLM_TIMEOUT_SECONDS = 0.2
    settings.LLM_MAX_RETRIES = 1
    fake.default_mode = "hang"
    started = time.monotonic()
    chunks, error = await collect_until_error(openai_provider(), oa_request())
    elapsed = time.monotonic() - started
    assert chunks == []
    assert "timed out" in error.message
    assert error.retryable is True
    assert len(fake.requests) == 2
    assert 0.4 <= elapsed < 2


async def test_openai_unreachable_server(fake, settings):
    fake.stop()
    settings.LLM_MAX_RETRIES = 1
    chunks, error = await collect_until_error(openai_provider(), oa_request())
    assert chunks == []
    assert "connection" in error.message
    assert error.retryable is True


async def test_openai_cancellation_closes_the_stream(fake):
    fake.modes = ["slow"]
    got_first = asyncio.Event()
    received: list[Chunk] = []

    async def consume() -> None:
        async for item in openai_provider().stream(oa_request()):
            received.append(item)
            got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), 2)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 0.2
    # the server notices the closed connection long before the slow stream would end
    assert await asyncio.to_thread(fake.client_closed.wait, 1.0)
    assert len(received) < 20


async def test_openai_closing_the_generator_closes_the_stream(fake):
    fake.modes = ["slow"]
    stream = openai_provider().stream(oa_request())
    first = await anext(stream)
    assert first == Chunk(fake.answer[0], False)
    await stream.aclose()
    assert await asyncio.to_thread(fake.client_closed.wait, 1.0)
