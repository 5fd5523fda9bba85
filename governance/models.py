"""An OpenAI-compatible chat model as a governed action (optional extra: ``pip install 'garrison[models]'``).

:class:`ChatCompletion` is the action (capability ``model.chat``, low risk,
idempotent); :class:`ChatModel` is the tool that performs it against any
server speaking the OpenAI chat-completions API (``base_url``), with the
official ``openai`` package::

    chat = ChatModel("http://127.0.0.1:8000/v1", api_key="sk-local",
                     prices={"llama-3-8b": (0.0002, 0.0006)})      # per 1,000 input / output tokens

    class Assistant(Agent):
        tools = {ChatCompletion: chat}

        @handler
        async def ask(self, msg: Question) -> str | None:
            outcome = await self.act(ChatCompletion(model="llama-3-8b", max_tokens=200,
                                                    messages=[{"role": "user", "content": msg.text}]))
            return outcome.result["content"] if outcome.ok else None

Cost.  The *estimate* (what a budget reserves before the call) is an upper
bound: one input token per UTF-8 byte of the messages plus 4 per message and
3 for the reply, and ``max_tokens`` output tokens, at the model's prices, so
with a budget no call overruns its reservation.  The *actual* cost (what the
outcome records and the budget settles) is ``usage.prompt_tokens`` and
``usage.completion_tokens`` at the same prices; a server that reports no
usage is charged the estimate.

Prices.  A :class:`ChatModel`'s price table is also its allow-list: a model
not in it is refused before anything is sent (:class:`ModelNotPriced`, a
declared business error of the action: a ``failed`` outcome, not retryable,
charged nothing, not counted by breakers), and its estimate is 0.  The
estimate is a function of the action alone, so prices are registered per
process by model name when a ChatModel is made (or unpickled on a Ray
worker); two ChatModels pricing one model differently in one process is a
:class:`PolicyError` when the second is made.

Errors from ``openai`` are translated here, keeping the original as
``__cause__``; the gateway makes them ``failed`` outcomes that count against
the breakers:

==========================================================  ====================  =========
openai                                                      raised                retryable
==========================================================  ====================  =========
``APIConnectionError``, ``APITimeoutError``                 ``ToolUnavailable``   yes
``RateLimitError`` (429), 408, 409, any 5xx                 ``ToolUnavailable``   yes
other ``APIStatusError`` (400, 401, 403, 404, 422...)       ``ToolRejected``      no
any other ``OpenAIError`` (a malformed response...)         ``ToolRejected``      no
==========================================================  ====================  =========

The client retries nothing itself (``max_retries=0`` by default): retrying is
the caller's decision, and every attempt is then one governed, recorded call.
A truncated reply (``finish_reason == "length"``) is an ``ok`` outcome marked
``partial``.

Nothing imports ``openai`` until a call is made: the action can be decoded
(in an approval queue, say) where the package is not installed.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._action import Action, Risk
from ._per_loop import PerLoop
from ._tool import Result
from .exceptions import ModelNotPriced, PolicyError, ToolRejected, ToolUnavailable

__all__ = ["ChatCompletion", "ChatModel", "ChatTurn", "estimate_cost", "price_of"]

#: Status codes worth the same call again later (what the openai client itself retries).
RETRYABLE_STATUS = frozenset({408, 409, 429})

Price = tuple[float, float]

# Process-wide prices by model name (see "Prices" above); guarded by _PRICES_LOCK.
_PRICES: dict[str, Price] = {}
_PRICES_LOCK = threading.Lock()


def _register_prices(prices: dict[str, Price]) -> None:
    with _PRICES_LOCK:
        for model, price in prices.items():
            known = _PRICES.get(model)
            if known is not None and known != price:
                raise PolicyError(f"model {model!r} is priced {known} per 1k tokens by another ChatModel in this "
                                  f"process; {price} here: one model, one price")
        _PRICES.update(prices)


def price_of(model: str) -> Price | None:
    """``(input_per_1k, output_per_1k)`` for ``model`` as this process's ChatModels priced it, or None."""
    with _PRICES_LOCK:
        return _PRICES.get(model)


class ChatTurn(BaseModel):
    """One message of a conversation: who says it and what."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str


def estimate_cost(action: ChatCompletion) -> float:
    """The action's cost estimate, an upper bound (module docstring); 0.0 for an unpriced model."""
    price = price_of(action.model)
    if price is None:
        return 0.0
    prompt = sum(len(turn.content.encode()) + 4 for turn in action.messages) + 3
    return _cost(price, prompt, action.max_tokens)


def _cost(price: Price, prompt_tokens: int, completion_tokens: int) -> float:
    return prompt_tokens / 1000 * price[0] + completion_tokens / 1000 * price[1]


class ChatCompletion(Action, name="garrison.model.chat", capability="model.chat", risk=Risk.LOW,
                     idempotent=True, business_errors=(ModelNotPriced,), cost=estimate_cost):
    """Ask a chat model for the next message of ``messages``.

    Subclass it (another ``name=``) to give a use of a model its own
    capability or risk class; the declarations left out are inherited.
    """

    model: str = Field(min_length=1)
    messages: tuple[ChatTurn, ...] = Field(min_length=1)
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)


class ChatModel:
    """The tool performing :class:`ChatCompletion` against an OpenAI-compatible server (module docstring).

    ``prices`` maps each model it may call to ``(input_per_1k, output_per_1k)``
    (finite, >= 0).  ``api_key=None`` lets the client read ``OPENAI_API_KEY``
    in the process that makes the call, so the key does not travel with the
    agent class.  The ``openai`` client is made lazily, one per event loop,
    and is not pickled: a ChatModel travels to Ray workers as its settings.
    """

    def __init__(self, base_url: str, *, prices: dict[str, Price], api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 0) -> None:
        if not prices:
            raise PolicyError("ChatModel: give a price table {model: (input_per_1k, output_per_1k)}: "
                              "it is also the list of models this tool may call")
        checked = {model: _check_price(model, price) for model, price in prices.items()}
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise PolicyError(f"ChatModel: timeout must be > 0 seconds, got {timeout!r}")
        _register_prices(checked)
        self.base_url = base_url
        self.prices = checked
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self._api_key = api_key
        self._clients: PerLoop[Any] = PerLoop(self._new_client)

    def __getstate__(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "prices": self.prices, "api_key": self._api_key,
                "timeout": self.timeout, "max_retries": self.max_retries}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["base_url"], prices=state["prices"], api_key=state["api_key"],
                      timeout=state["timeout"], max_retries=state["max_retries"])

    def __repr__(self) -> str:
        return f"ChatModel({self.base_url!r}, models={sorted(self.prices)})"

    def _new_client(self) -> Any:
        openai = _import_openai()
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key, timeout=self.timeout,
                                  max_retries=self.max_retries)

    async def __call__(self, action: ChatCompletion) -> Result:
        if not isinstance(action, ChatCompletion):
            raise TypeError(f"ChatModel performs ChatCompletion actions, not {type(action).__name__}")
        price = self.prices.get(action.model)
        if price is None:
            raise ModelNotPriced(f"model {action.model!r} is not in this ChatModel's price table "
                                 f"({', '.join(sorted(self.prices))}); nothing was sent", model=action.model)
        openai = _import_openai()
        try:
            reply = await self._clients.get().chat.completions.create(
                model=action.model, max_tokens=action.max_tokens, temperature=action.temperature,
                messages=[turn.model_dump() for turn in action.messages])
        except openai.OpenAIError as exc:
            raise translate_error(exc) from exc
        return _result(reply, price)


def _check_price(model: str, price: Any) -> Price:
    try:
        pair = (float(price[0]), float(price[1]))
        ok = len(price) == 2 and all(math.isfinite(p) and p >= 0 for p in pair)
    except (TypeError, ValueError, IndexError):
        ok = False
    if not ok:
        raise PolicyError(f"ChatModel: price of {model!r} must be (input_per_1k, output_per_1k), "
                          f"finite and >= 0, got {price!r}")
    return pair


def _result(reply: Any, price: Price) -> Result:
    """The tool's answer: content, model and usage; the cost from usage (None: the estimate)."""
    choice = reply.choices[0] if reply.choices else None
    usage = reply.usage
    counts = None if usage is None else {"prompt_tokens": usage.prompt_tokens,
                                         "completion_tokens": usage.completion_tokens,
                                         "total_tokens": usage.total_tokens}
    cost = None if usage is None else _cost(price, usage.prompt_tokens, usage.completion_tokens)
    finish = None if choice is None else choice.finish_reason
    value = {"content": None if choice is None else choice.message.content, "model": reply.model,
             "usage": counts, "finish_reason": finish}
    return Result(value, cost=cost, partial=finish == "length")


def translate_error(exc: Exception) -> Exception:
    """Our error for an ``openai`` error (table in the module docstring); the caller chains the original."""
    openai = _import_openai()
    what = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError included
        return ToolUnavailable(f"model server unreachable or too slow: {what}")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in RETRYABLE_STATUS or status >= 500:
            return ToolUnavailable(f"model server answered {status}: {what}", status=status)
        return ToolRejected(f"model server refused the call ({status}): {what}", status=status)
    return ToolRejected(f"model call failed: {what}")


def _import_openai() -> Any:
    try:
        import openai
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("governance.models needs the openai package: pip install 'garrison[models]'") from exc
    return openai
