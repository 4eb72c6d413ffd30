"""Views of one explained step (`retrain.analysis.explain.Explanation`): a Rich table for the
terminal, JSON and CSV for scripts, and a self-contained HTML page (no external assets) with the
tokens coloured by their final advantage.

Data flow: explain.explain_step ─▶ **here** ─▶ cli/explain_cmd.py prints or writes the result.
"""

from __future__ import annotations

import csv
import html
import io
import json
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from retrain.analysis.explain import Completion, Explanation, GroupHeader, TokenRow

STAGE_LABELS = {"episode": "A ep", "gtpo": "A gtpo", "hicra": "A hicra", "custom": "A cust"}
LEGEND = ("logp: sampled-token logprob · ent: entropy · surp: −logp · P: planning token · "
          "h / h': uncertainty before / after sepa pooling · w: gtpo weight · A ep: episode "
          "advantage · A gtpo, A hicra, A cust: after that stage · A: final (what the trainer used)")
POS_RGB = (214, 39, 40)  # the most positive advantage of the step
NEG_RGB = (31, 119, 180)  # the most negative


def num(x: float | None) -> str:
    """3-4 significant digits; '' for a value that does not exist."""
    if x is None:
        return ""
    if x == 0:
        return "0"
    return f"{x:.4g}" if abs(x) >= 1e-3 else f"{x:.2e}"


def _columns(ex: Explanation) -> list[str]:
    """Value columns shown for this step: only the stages the mode ran."""
    tr = ex.recomputed.trace
    cols = ["logp"]
    if ex.record.entropy_T is not None:
        cols.append("ent")
    cols += ["surp", "P", "h"]
    if "sepa" in _parts(ex):
        cols.append("h'")
    if tr.gtpo_weight_T is not None:
        cols.append("w")
    cols += [STAGE_LABELS[s] for s in tr.stages] + ["A"]
    return cols


def _parts(ex: Explanation) -> frozenset[str]:
    from retrain.algo.modes import TRANSFORM_MODES, transform_parts

    mode = str(ex.record.settings["transform_mode"])
    return transform_parts(mode) if mode in TRANSFORM_MODES else frozenset()


def _values(row: TokenRow, cols: list[str]) -> list[str]:
    by_label = {STAGE_LABELS[k]: v for k, v in row.stages.items()}
    out = []
    for c in cols:
        value: float | None
        if c == "P":
            out.append("P" if row.planning else "")
            continue
        value = {"logp": row.logprob, "ent": row.entropy, "surp": row.surprisal,
                 "h": row.uncertainty, "h'": row.pooled, "w": row.gtpo_weight,
                 "A": row.adv}.get(c, by_label.get(c))
        out.append(num(value))
    return out


# --- terminal --------------------------------------------------------------------------------

def summary_line(ex: Explanation) -> str:
    r = ex.record
    s = r.settings
    phase = f" · phase {r.phase}" if r.phase else ""
    return (f"step {r.step}{phase} · {s['advantage_mode']}+{s['transform_mode']} · "
            f"uncertainty {s['uncertainty_kind']} · sepa λ {num(r.sepa_lambda)} · "
            f"{r.num_sequences} completions, {int(r.offsets[-1])} tokens")


def check_line(ex: Explanation) -> tuple[str, bool]:
    rec = ex.recomputed
    n = int(ex.record.offsets[-1])
    if rec.matches:
        return f"recomputed advantages equal the recorded ones exactly ({n} tokens)", True
    return (f"MISMATCH: the recomputed advantages differ from the ones the trainer recorded "
            f"(max |diff| {rec.max_abs_diff:.3g}); the record or the trainer is wrong: "
            f"{ex.record.path}"), False


def _header_text(h: GroupHeader, step: int) -> Text:
    t = Text()
    t.append(f"group {h.group}", style="bold")
    t.append(f" of step {step}  prompt: ")
    t.append(h.prompt, style="cyan")
    for seq, r, a in zip(h.sequences, h.rewards, h.episode_adv, strict=True):
        mark = "▶" if seq in h.shown else " "
        t.append(f"\n  {mark} #{seq:<4d} reward {num(r):>6}  episode A {num(a):>7}")
    return t


def _completion_table(c: Completion, cols: list[str]) -> Table:
    title = (f"#{c.sequence} (group {c.group}) reward {num(c.reward)} · episode A "
             f"{num(c.episode_adv)}{' · truncated' if c.truncated else ''}")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  padding=(0, 1))
    table.add_column("#", justify="right", style="dim")
    table.add_column("token", max_width=14, overflow="fold")
    for col in cols:
        table.add_column(col, justify="center" if col == "P" else "right",
                         style="bold" if col == "A" else None)
    for row in c.rows:
        table.add_row(str(row.index), Text(row.text), *_values(row, cols))
    return table


def render_console(ex: Explanation) -> RenderableType:
    cols = _columns(ex)
    parts: list[RenderableType] = [Text(summary_line(ex), style="bold")]
    for h in ex.headers:
        parts.append(_header_text(h, ex.record.step))
        for c in ex.completions:
            if c.group == h.group:
                parts.append(_completion_table(c, cols))
    parts.append(Text(LEGEND, style="dim"))
    return Group(*parts)


# --- JSON / CSV ------------------------------------------------------------------------------

def _row_dict(row: TokenRow) -> dict[str, Any]:
    return {"index": row.index, "token": row.text, "logprob": row.logprob, "entropy": row.entropy,
            "surprisal": row.surprisal, "planning": row.planning, "uncertainty": row.uncertainty,
            "uncertainty_pooled": row.pooled, "gtpo_weight": row.gtpo_weight,
            **{f"adv_{k}": v for k, v in row.stages.items()}, "adv": row.adv}


def to_json(ex: Explanation) -> str:
    r = ex.record
    doc = {
        "step": r.step, "file": str(r.path), "phase": r.phase, "sepa_lambda": r.sepa_lambda,
        "algorithm": r.settings, "num_tokens": int(r.offsets[-1]),
        "matches_recorded": ex.recomputed.matches, "max_abs_diff": ex.recomputed.max_abs_diff,
        "groups": [{"group": h.group, "prompt": h.prompt, "sequences": h.sequences,
                    "rewards": h.rewards, "episode_adv": h.episode_adv, "shown": h.shown}
                   for h in ex.headers],
        "completions": [{"sequence": c.sequence, "group": c.group, "reward": c.reward,
                         "episode_adv": c.episode_adv, "truncated": c.truncated,
                         "text": c.text, "tokens": [_row_dict(t) for t in c.rows]}
                        for c in ex.completions],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


def to_csv(ex: Explanation) -> str:
    """One line per token of the shown completions (long format, stable columns)."""
    stages = list(ex.recomputed.trace.stages)
    fields = ["step", "sequence", "group", "reward", "index", "token", "logprob", "entropy",
              "surprisal", "planning", "uncertainty", "uncertainty_pooled", "gtpo_weight",
              *(f"adv_{s}" for s in stages), "adv"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for c in ex.completions:
        for row in c.rows:
            d = _row_dict(row)
            w.writerow({"step": ex.record.step, "sequence": c.sequence, "group": c.group,
                        "reward": c.reward, **{k: ("" if v is None else v) for k, v in d.items()
                                               if k in fields}})
    return buf.getvalue()


# --- HTML ------------------------------------------------------------------------------------

def colour(adv: float, max_abs: float) -> tuple[str, str]:
    """(background, text colour): white at 0, red for the step's largest positive advantage,
    blue for its most negative one, linear in between."""
    t = 0.0 if max_abs <= 0 else max(-1.0, min(1.0, adv / max_abs))
    end = POS_RGB if t > 0 else NEG_RGB
    rgb = tuple(round(255 + abs(t) * (e - 255)) for e in end)
    return f"rgb({rgb[0]},{rgb[1]},{rgb[2]})", "#fff" if abs(t) > 0.6 else "#111"


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#111;max-width:1150px}
h1{font-size:19px;margin:0 0 4px} h2{font-size:16px;margin:22px 0 6px} .sub{color:#555;margin-bottom:10px}
.ok{color:#17662c;font-weight:600} .bad{color:#fff;background:#b00020;padding:4px 8px;font-weight:700}
.prompt{font-family:ui-monospace,Menlo,Consolas,monospace;background:#f3f3f3;padding:2px 6px}
table{border-collapse:collapse;margin:6px 0 10px} td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #e5e5e5}
th{background:#fafafa;font-weight:600} td.t{text-align:left;font-family:ui-monospace,Menlo,Consolas,monospace}
tr.shown td{font-weight:700}
.seq{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:18px;line-height:2.1;margin:8px 0}
.tok{position:relative;padding:3px 2px;margin:0 1px;border-radius:3px;border:2px solid transparent;cursor:default}
.tok.plan{border-color:#111;border-style:dashed}
.tok:hover{outline:2px solid #f5a623}
.tok:hover::after{content:attr(data-tip);white-space:pre;position:absolute;left:0;top:2.2em;z-index:9;
 background:#222;color:#fff;font-size:12px;line-height:1.35;padding:6px 8px;border-radius:4px}
.legend{display:flex;align-items:center;gap:8px;margin:10px 0;color:#333} .legend>span:not(:last-child){white-space:nowrap}
.bar{width:260px;height:14px;border:1px solid #999;background:linear-gradient(90deg,rgb(31,119,180),#fff,rgb(214,39,40))}
.key{border:2px dashed #111;padding:0 4px;border-radius:3px;font-family:ui-monospace,monospace}
.dim{color:#666;font-size:12px}
"""


def _tip(row: TokenRow) -> str:
    lines = [f"token {row.index}: {row.text}", f"logprob {num(row.logprob)}",
             f"surprisal {num(row.surprisal)}"]
    if row.entropy is not None:
        lines.append(f"entropy {num(row.entropy)}")
    lines += [f"planning {'yes' if row.planning else 'no'}", f"h (before sepa) {num(row.uncertainty)}",
              f"h' (after sepa) {num(row.pooled)}"]
    if row.gtpo_weight is not None:
        lines.append(f"gtpo weight {num(row.gtpo_weight)}")
    lines += [f"{STAGE_LABELS[k]} {num(v)}" for k, v in row.stages.items()]
    lines.append(f"A final {num(row.adv)}")
    return "\n".join(lines)


def _html_tokens(c: Completion, max_abs: float) -> str:
    spans = []
    for row in c.rows:
        bg, fg = colour(row.adv, max_abs)
        cls = "tok plan" if row.planning else "tok"
        spans.append(f'<span class="{cls}" style="background:{bg};color:{fg}" '
                     f'data-tip="{html.escape(_tip(row), quote=True)}">{html.escape(row.text)}</span>'
                     + ("<br>" if row.text.endswith("⏎") else ""))
    return f'<div class="seq">{"".join(spans)}</div>'


def _html_table(c: Completion, cols: list[str], max_abs: float) -> str:
    head = "".join(f"<th>{html.escape(x)}</th>" for x in ["#", "token", *cols])
    body = []
    for row in c.rows:
        bg, fg = colour(row.adv, max_abs)
        vals = _values(row, cols)
        cells = "".join(f"<td>{html.escape(v)}</td>" for v in vals[:-1])
        body.append(f'<tr><td>{row.index}</td><td class="t">{html.escape(row.text)}</td>{cells}'
                    f'<td style="background:{bg};color:{fg}"><b>{html.escape(vals[-1])}</b></td></tr>')
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _html_group(h: GroupHeader) -> str:
    rows = "".join(
        f'<tr class="{"shown" if s in h.shown else ""}"><td>#{s}</td><td>{num(r)}</td><td>{num(a)}</td>'
        f'<td class="t">{"shown below" if s in h.shown else ""}</td></tr>'
        for s, r, a in zip(h.sequences, h.rewards, h.episode_adv, strict=True))
    return (f'<h2>Group {h.group} — prompt <span class="prompt">{html.escape(h.prompt)}</span></h2>'
            f"<table><tr><th>completion</th><th>reward</th><th>episode A</th><th></th></tr>{rows}</table>")


def to_html(ex: Explanation, *, title: str = "") -> str:
    cols = _columns(ex)
    text, ok = check_line(ex)
    m = ex.max_abs_adv
    parts = [f"<h1>retrain explain — {html.escape(title or str(ex.record.path))}</h1>",
             f'<div class="sub">{html.escape(summary_line(ex))}</div>',
             f'<div class="{"ok" if ok else "bad"}">{html.escape(text)}</div>',
             '<div class="legend"><span>A = −' + num(m) + '</span><span class="bar"></span>'
             f'<span>+{num(m)}</span><span>· token colour = final advantage, scaled to the '
             'step\'s max |A| · <span class="key">dashed</span> = planning token · hover a '
             "token for its values</span></div>"]
    for h in ex.headers:
        parts.append(_html_group(h))
        for c in ex.completions:
            if c.group == h.group:
                trunc = " · truncated" if c.truncated else ""
                parts.append(f"<h2>Completion #{c.sequence} — reward {num(c.reward)} · episode A "
                             f"{num(c.episode_adv)}{trunc}</h2>")
                parts.append(_html_tokens(c, m))
                parts.append(_html_table(c, cols, m))
    parts.append(f'<p class="dim">{html.escape(LEGEND)}</p>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>retrain explain step {ex.record.step}</title><style>{_CSS}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")
