"""SFT on a teacher's own trajectories: the off-policy cold start before OPD (arXiv 2604.13016, §5:
the teacher answers the training prompts, the student is fine-tuned on those answers, then OPD).

`teacher_responses` replaces every example's reference response by one sample of the teacher at
the given temperature / top-p, drawn with the rollout module's engine (seeded), and drops samples
the teacher did not finish within `max_new_tokens` (the paper filters truncated and repetitive
outputs; repetition filtering is not done here). The teacher must share the student's tokenizer
(checked before its weights load), like every teacher.
"""

from __future__ import annotations

import dataclasses

from arena.errors import DataError
from arena.generation.seeds import derive_seed
from arena import rollouts as R


def teacher_responses(ctx, examples: list, ref: str, temperature: float, top_p: float,
                      max_new_tokens: int) -> tuple[list, list[int], dict]:
    """(examples with teacher responses, the index of each in `examples`, stats for the run record)."""
    from arena.objectives.teacher import load_teacher, model_label  # loads models: imported when used

    teacher, _, info = load_teacher(ref, ctx.device, ctx.tokenizer, model_label(ctx.tokenizer, ctx.model))
    prompts = R.encode_prompts(ctx.tokenizer, [e.prompt for e in examples])
    params = R.SamplingParams(temperature, top_p, max_new_tokens, 1)
    ro = R.sample(teacher, ctx.tokenizer, prompts, params, derive_seed(ctx.seed, 0x7EAC), ctx.device, ctx.precision)
    out, index, truncated, empty = [], [], 0, 0
    for i, (e, text, fin) in enumerate(zip(examples, ro.texts, ro.finished.tolist())):
        if not fin:
            truncated += 1
            continue
        if not text.strip():
            empty += 1
            continue
        out.append(dataclasses.replace(e, response=text.strip(), meta={**e.meta, "response_source": "teacher"}))
        index.append(i)
    del teacher
    if not out:
        raise DataError(f"objective.responses_from: the teacher {ref!r} finished none of {len(examples)} responses within "
                        f"{max_new_tokens} tokens; raise objective.responses_max_new_tokens")
    return out, index, {"teacher": info, "generated": len(examples), "kept": len(out), "truncated": truncated,
                 "empty": empty, "seconds": round(ro.seconds, 2), "temperature": temperature, "top_p": top_p}
