"""Decoding helpers of the local generator (``_local``): a streamer that counts the new tokens, the end-of-answer
bias of span decoding, and stopping criteria for a ``stop_when`` check."""

from __future__ import annotations


def counting_streamer(tokenizer, skip_prompt: bool, ends: set[int]):
    """A ``TextIteratorStreamer`` that also counts the new tokens (up to an end of sequence, ``new_tokens``) and says
    whether one came (``saw_end``)."""
    from transformers import TextIteratorStreamer

    class _Counting(TextIteratorStreamer):
        new_tokens, saw_end, _first = 0, False, True

        def put(self, value) -> None:
            ids = value.reshape(-1).tolist()
            if self._first and (self.skip_prompt or len(ids) == 1):  # the prompt, or a decoder's start token
                self._first = False
            elif not self.saw_end:
                n = next((k for k, t in enumerate(ids) if t in ends), None)
                self.new_tokens += len(ids) if n is None else n
                self.saw_end = n is not None
            super().put(value)

    return _Counting(tokenizer, skip_prompt=skip_prompt, skip_special_tokens=True)


def end_bias(eos: list[int], bias: float):
    from transformers import LogitsProcessor, LogitsProcessorList

    class _Bias(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores[:, eos] += bias
            return scores

    return LogitsProcessorList([_Bias()])


def stopping(check):
    """Stopping criteria that end every row at the next decoding step once ``check()`` is true."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), bool(check()), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Stop()])
