"""Lab 2, solution: which stage a moment of the budget falls in, and how many steps each stage gets."""


def stage_at(progress: float, ratios) -> int:
    """Index of the stage that trains at `progress` (0 <= progress <= 1), for stage shares
    `ratios` (any positive numbers: [1, 1, 2, 4] means 1/8, 1/8, 2/8, 4/8 of the budget).

    A stage covers [start, end): progress exactly at a boundary belongs to the next stage.
    The last stage also takes progress 1.0."""
    total = sum(ratios)
    end = 0.0
    for i, r in enumerate(ratios[:-1]):
        end += r / total          # accumulated as schedule.Plan.make does, so boundaries agree to the bit
        if progress < end:
            return i
    return len(ratios) - 1


def steps_per_stage(schedule, ratios, max_tokens: int, tokens_per_step: int) -> list:
    """Optimizer steps each stage gets under a token budget (--max-tokens), as train.py's loop
    takes them: before every step, progress = tokens so far / max_tokens; stop at 1.0;
    otherwise train one step of tokens_per_step tokens in the stage `progress` falls in.

    On paper: stage i gets about ratio_i x max_tokens / tokens_per_step steps; the exact
    count rounds the stage's end up to a whole step."""
    steps = [0] * len(schedule)
    tokens = 0
    while tokens / max_tokens < 1.0:
        steps[stage_at(tokens / max_tokens, ratios)] += 1
        tokens += tokens_per_step
    return steps


def linear_ramp(lengths, ramp: float) -> list:
    """--ratios for `--schedule lengths` that follow a linear ramp of the context window, in
    the manner of SkyLadder (Zhu et al., 2025): the window grows linearly with progress from
    lengths[0] at progress 0 to lengths[-1] at progress `ramp` (0 < ramp < 1), then stays at
    lengths[-1]. The stages are the only lengths train.py can run, so at every moment train
    at the longest of `lengths` that the ramp's window has reached. Returns one share per
    length, each > 0, summing to 1 (pass them as --ratios)."""
    first, last = lengths[0], lengths[-1]
    # The window reaches length L at progress ramp·(L - first)/(last - first); a stage runs
    # from the moment the window reaches its length to the moment it reaches the next one.
    reached = [ramp * (L - first) / (last - first) for L in lengths] + [1.0]
    return [b - a for a, b in zip(reached, reached[1:])]
