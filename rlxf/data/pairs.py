"""Both responses of a pair in one input, for a general preference model P(a ≻ b | x).

The input is the prompt, then ``[Response A]`` and ``[Response B]`` each followed by a response
(every response within the encoder's budget, as for a reward model); the same pair swapped is
the second input, so a model can score both orders and be antisymmetric by construction.
"""

from __future__ import annotations

from rlxf.data.records import Message
from rlxf.data.templating import ChatEncoder

MARKERS = ("\n\n[Response A]\n", "\n\n[Response B]\n")


def pair_inputs(
    encoder: ChatEncoder, messages: list[Message], first: str, second: str, source: str = ""
) -> tuple[list[int], list[int]]:
    """Token ids of (prompt, A = first, B = second) and of (prompt, A = second, B = first)."""
    encoded = encoder.encode(messages, [first, second], source)
    cut = len(encoder.suffix)
    a, b = (ids[: len(ids) - cut] if cut else ids for ids in encoded.completions)
    mark_a, mark_b = (encoder.tokenizer(m, add_special_tokens=False)["input_ids"] for m in MARKERS)
    return (
        encoded.prompt + mark_a + a + mark_b + b + encoder.suffix,
        encoded.prompt + mark_a + b + mark_b + a + encoder.suffix,
    )
