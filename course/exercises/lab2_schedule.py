"""Lab 2, exercise: which stage a moment of the budget falls in, and how many steps each stage gets.

Replace each `raise NotImplementedError` with your code (lab2-*.md says what to read first),
then check it: pytest course/ -k lab2
"""


def stage_at(progress: float, ratios) -> int:
    """Index of the stage that trains at `progress` (0 <= progress <= 1), for stage shares
    `ratios` (any positive numbers: [1, 1, 2, 4] means 1/8, 1/8, 2/8, 4/8 of the budget).

    A stage covers [start, end): progress exactly at a boundary belongs to the next stage.
    The last stage also takes progress 1.0."""
    raise NotImplementedError("lab 2, exercise 1: walk the cumulative shares until progress < the stage's end")


def steps_per_stage(schedule, ratios, max_tokens: int, tokens_per_step: int) -> list:
    """Optimizer steps each stage gets under a token budget (--max-tokens), as train.py's loop
    takes them: before every step, progress = tokens so far / max_tokens; stop at 1.0;
    otherwise train one step of tokens_per_step tokens in the stage `progress` falls in.

    On paper: stage i gets about ratio_i x max_tokens / tokens_per_step steps; the exact
    count rounds the stage's end up to a whole step."""
    raise NotImplementedError("lab 2, exercise 2: step the token count as train.py's loop does")


def linear_ramp(lengths, ramp: float) -> list:
    """--ratios for `--schedule lengths` that follow a linear ramp of the context window, in
    the manner of SkyLadder (Zhu et al., 2025): the window grows linearly with progress from
    lengths[0] at progress 0 to lengths[-1] at progress `ramp` (0 < ramp < 1), then stays at
    lengths[-1]. The stages are the only lengths train.py can run, so at every moment train
    at the longest of `lengths` that the ramp's window has reached. Returns one share per
    length, each > 0, summing to 1 (pass them as --ratios)."""
    raise NotImplementedError("lab 2, exercise 3: at what progress does the ramp reach each length?")
