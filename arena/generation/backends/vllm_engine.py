"""The `vllm` engine (CUDA machines, optional extra `pip install 'arena[vllm]'`).

vLLM loads weights from a folder, so the first build exports the model's merged weights
(`weights.merged_state_dict`) with its config and tokenizer to a temporary folder and starts one
`vllm.LLM` colocated with training (`gpu_memory_utilization` from EngineOptions, 0.3 by default, as
TRL's colocate mode shares the GPU). The engine is kept per model object: later builds (every
rollout step, every evaluation of the same model) only push the current merged weights into the
running engine with the model's own `load_weights` — TRL's colocate weight sync — instead of a new
export. Requests go in as token ids, stop strings are vLLM's `stop`, and the sampled tokens'
log-probs are requested after temperature scaling (`logprobs_mode="processed_logprobs"`), which is
what the RL losses recompute.

Not run on a GPU by this project yet (no device was lent): on machines without CUDA or without vLLM
`engine.check_available` raises a ConfigError naming the extra to install, before anything is written.
"""

from __future__ import annotations

import tempfile
import weakref


from arena.generation.engine import ENGINES, EngineOptions
from arena.generation.requests import Completion, GenRequest, Sampling
from arena.generation.weights import base_transformer, merged_state_dict

_ENGINES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class VLLMEngine:
    name = "vllm"

    def __init__(self, model, tokenizer, precision: str, options: EngineOptions):
        from vllm import LLM

        base = base_transformer(model)
        self.folder = tempfile.TemporaryDirectory(prefix="arena-vllm-")
        base.config.save_pretrained(self.folder.name)
        tokenizer.save_pretrained(self.folder.name)
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous().cpu() for k, v in merged_state_dict(model).items()},
                  f"{self.folder.name}/model.safetensors")
        self.llm = LLM(model=self.folder.name, dtype="bfloat16" if precision != "fp32" else "float32",
                       gpu_memory_utilization=options.gpu_memory_utilization, enable_prefix_caching=True,
                       logprobs_mode="processed_logprobs")

    def sync(self, model) -> None:
        """Push the model's current merged weights into the running engine (TRL's colocate sync)."""
        runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.model.load_weights(merged_state_dict(model).items())
        self.llm.reset_prefix_cache()

    def generate(self, requests: list[GenRequest], sampling: Sampling, seed: int) -> list[Completion]:
        from vllm import SamplingParams, TokensPrompt

        params = [SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=r.max_new_tokens,
                                 stop=list(r.stop_strings) or None, include_stop_str_in_output=True, logprobs=0,
                                 seed=seed + i) for i, r in enumerate(requests)]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=r.prompt_ids) for r in requests], params, use_tqdm=False)
        done = []
        for o in outs:
            c = o.outputs[0]
            lps = [float(step[t].logprob) for t, step in zip(c.token_ids, c.logprobs or [])]
            reason = "length" if c.finish_reason == "length" else ("stop_string" if isinstance(c.stop_reason, str) else "stop")
            done.append(Completion(list(c.token_ids), lps, reason))
        return done


@ENGINES.register("vllm")
def vllm_engine(model, tokenizer, *, device, precision, options, field="engine"):
    eng = _ENGINES.get(model)
    if eng is None:
        eng = _ENGINES[model] = VLLMEngine(model, tokenizer, precision, options)
    else:
        eng.sync(model)
    return eng
