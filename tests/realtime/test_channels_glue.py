"""What realtime/channels_glue.py relies on in Channels: fails when an upgrade changes it."""

from __future__ import annotations

import inspect

import channels
from channels.consumer import AsyncConsumer
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from realtime.channels_glue import NO_CHANNEL_LAYER, OneCoroutineConsumer

CHECKED_AGAINST = "4.3.2"


def test_the_glue_was_checked_against_this_channels_release():
    assert channels.__version__ == CHECKED_AGAINST, (
        f"Channels is {channels.__version__}: re-read AsyncConsumer.__call__/dispatch and "
        "AsyncWebsocketConsumer against realtime/channels_glue.py, then update CHECKED_AGAINST"
    )


def test_consumer_call_sets_the_attributes_the_glue_sets_itself():
    source = inspect.getsource(AsyncConsumer.__call__)
    for attribute in ("self.scope = scope", "self.channel_layer = ", "self.base_send = send"):
        assert attribute in source, attribute
    assert "await_many_dispatch" in source  # what the glue avoids (a task per socket)
    assert "self.base_send(message)" in inspect.getsource(AsyncConsumer.send)


def test_channels_dispatch_still_hops_a_thread_per_message():
    # If this fails, Channels stopped calling aclose_old_connections per message and the
    # glue's dispatch override may be dropped.
    assert "aclose_old_connections" in inspect.getsource(AsyncConsumer.dispatch)


def test_an_alias_that_names_no_layer_gives_no_layer():
    assert get_channel_layer(NO_CHANNEL_LAYER) is None


def test_websocket_handlers_call_connect_and_receive():
    assert "self.connect()" in inspect.getsource(AsyncWebsocketConsumer.websocket_connect)
    assert "self.receive(" in inspect.getsource(AsyncWebsocketConsumer.websocket_receive)
    assert issubclass(OneCoroutineConsumer, AsyncWebsocketConsumer)
    assert StopConsumer.__module__ == "channels.exceptions"


class _Echo(OneCoroutineConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=f"echo {text_data}")

    async def disconnect(self, code):
        type(self).closed_with = code


async def test_a_one_coroutine_consumer_accepts_echoes_and_disconnects():
    communicator = WebsocketCommunicator(_Echo.as_asgi(), "/ws/echo/")
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_to(text_data="hi")
    assert await communicator.receive_from() == "echo hi"
    await communicator.disconnect(code=4000)
    assert _Echo.closed_with == 4000
