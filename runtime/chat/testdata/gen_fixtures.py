#!/usr/bin/python3
"""Generates fixtures/fixtures.json: chat templates rendered by Python's Jinja2
the way Hugging Face transformers' apply_chat_template (and so the template
authors) render them, for the Go tests of runtime/chat.

The environment matches transformers' _compile_jinja_template:
  * ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with
    the loopcontrols extension (break/continue);
  * tojson is json.dumps(ensure_ascii=False) (Jinja's own escapes HTML);
  * raise_exception(msg) raises TemplateError(msg);
  * strftime_now(fmt) formats "now", fixed here by --date so the output is
    deterministic (the Go tests pass the same date).
The variables are messages, add_generation_prompt, bos_token and eos_token,
as runtime/chat passes them.

It also renders probes.txt, one small template a line exercising one
construct each, on PROBE_MESSAGES; the Go test lists the probes where gonja
is known to differ.

Run (system python, which has python3-jinja2):
  /usr/bin/python3 gen_fixtures.py > fixtures/fixtures.json
"""
import argparse
import datetime
import json
import os
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))

# Special-token texts of each model (tokenizer.ggml.tokens[bos/eos id]).
TEMPLATES = {
    "Qwen-Qwen2.5-7B-Instruct.jinja": ("<|endoftext|>", "<|im_end|>"),
    "google-gemma-2-2b-it.jinja": ("<bos>", "<eos>"),
    "meta-llama-Llama-3.2-3B-Instruct.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "microsoft-Phi-3.5-mini-instruct.jinja": ("<s>", "<|endoftext|>"),
    "features.jinja": ("<B>", "<E>"),
    # The package's fallback for models without a template.
    "../../chatml.jinja": ("", ""),
}

S, U, A, T = "system", "user", "assistant", "tool"


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


CONVERSATIONS = {
    "user_only": msgs((U, "Hello!")),
    "system_user": msgs((S, "You are a terse assistant."), (U, "What is 2+2?")),
    "multi_turn": msgs((U, "Hi"), (A, "Hello! How can I help?"), (U, "Tell me a joke.")),
    "system_multi_turn": msgs(
        (S, "Answer in French."), (U, "Good morning"), (A, "Bonjour"), (U, "Thanks")
    ),
    "assistant_last": msgs((U, "Count to three."), (A, "One, two, three.")),
    "whitespace_unicode": msgs(
        (U, "  padded with spaces and a newline\n"),
        (A, "\t réponse — ünïcødé 🚀 \n\n"),
        (U, "tabs\tand \"quotes\" and 'apostrophes' and \\backslash </s> <|im_end|>"),
    ),
    # Python's whitespace (str.strip, trim) includes U+001C..U+001F, Go's does not.
    "unicode_whitespace": msgs((U, "\x1f\u00a0 separators \u3000\x1c"), (A, "\u2003ok\x85")),
    "template_lookalike": msgs((U, "{{ 7*7 }} {% if true %}x{% endif %} {# c #} {%- raw %}")),
    "empty_system": msgs((S, ""), (U, "")),
    "tool_result": msgs(
        (U, "Weather in Paris?"), (A, "Checking."), (T, '{"temp_c": 21}'), (T, "sunny")
    ),
    "not_alternating": msgs((U, "one"), (U, "two")),
    "skip_and_stop": msgs((U, "SKIP this"), (A, "kept"), (U, "then STOP"), (A, "never")),
    "unknown_role": msgs((U, "hi"), ("narrator", "once upon a time")),
    "empty": [],
}


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. Zürich"},
        "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"]}}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}, "offset": {"type": "integer", "minimum": -12.5}}}}}


def call(id, name, args):
    return {"id": id, "type": "function", "function": {"name": name, "arguments": args}}


# Conversations with tools (the variables tools, tool_calls, tool_call_id
# and name, as transformers passes them: arguments are mappings). An
# assistant turn with only tool calls has content "" (runtime/chat passes
# no None: several templates concatenate content unchecked). Keys are in
# the order runtime/chat builds a message's dict (tojson shows it).
TOOL_CONVERSATIONS = {
    "tools_offered": {"tools": [WEATHER_TOOL, TIME_TOOL], "messages": msgs((S, "Be brief."), (U, "Weather in Paris?"))},
    "tools_no_system": {"tools": [WEATHER_TOOL], "messages": msgs((U, "Weather in Paris?"))},
    "tool_roundtrip": {"tools": [WEATHER_TOOL], "messages": msgs((U, "Weather in Paris?")) + [
        {"role": A, "content": "", "tool_calls": [call("call_1", "get_weather", {"city": "Paris", "unit": "c"})]},
        {"role": T, "content": '{"temp_c": 21}', "tool_call_id": "call_1", "name": "get_weather"},
    ]},
    "call_with_text": {"tools": [WEATHER_TOOL], "messages": msgs((U, "Weather?")) + [
        {"role": A, "content": "Let me check.", "tool_calls": [call("c9", "get_weather", {"city": "Bern", "n": 2, "x": 1.5, "ok": True, "z": None, "l": [1, "a"]})]},
        {"role": T, "content": "sunny", "tool_call_id": "c9"},
        {"role": A, "content": "It is sunny."},
        {"role": U, "content": "Thanks"},
    ]},
    "parallel_calls": {"tools": [WEATHER_TOOL, TIME_TOOL], "messages": msgs((U, "Weather and time in Oslo?")) + [
        {"role": A, "content": "", "tool_calls": [call("a", "get_weather", {"city": "Oslo"}), call("b", "get_time", {"tz": "Europe/Oslo"})]},
        {"role": T, "content": "rain", "tool_call_id": "a"},
        {"role": T, "content": "12:00", "tool_call_id": "b"},
    ]},
}


PROBE_MESSAGES = msgs((S, "  sys \n"), (U, "hi there"), (A, "yo"), (U, "bye"))


def render_case(tmpl, case, **variables):
    try:
        case["output"] = tmpl.render(**variables)
    except (jinja2.exceptions.TemplateError, TypeError) as e:
        case["error"] = "%s: %s" % (type(e).__name__, e)
    return case


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--date", default="2024-09-05", help="strftime_now's fixed date (YYYY-MM-DD)")
    args = ap.parse_args()
    now = datetime.datetime.strptime(args.date, "%Y-%m-%d")

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return now.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now

    cases = []
    for name, (bos, eos) in TEMPLATES.items():
        with open(os.path.join(HERE, "templates", name), encoding="utf-8") as f:
            tmpl = env.from_string(f.read())
        for conv, messages in CONVERSATIONS.items():
            for agp in (False, True):
                case = {"template": os.path.basename(name), "conversation": conv, "add_generation_prompt": agp}
                cases.append(render_case(tmpl, case, messages=messages, add_generation_prompt=agp, bos_token=bos, eos_token=eos))

    tool_cases = []
    for name, (bos, eos) in TEMPLATES.items():
        with open(os.path.join(HERE, "templates", name), encoding="utf-8") as f:
            tmpl = env.from_string(f.read())
        for conv, c in TOOL_CONVERSATIONS.items():
            for agp in (False, True):
                case = {"template": os.path.basename(name), "conversation": conv, "add_generation_prompt": agp}
                tool_cases.append(render_case(tmpl, case, messages=c["messages"], tools=c["tools"],
                                              add_generation_prompt=agp, bos_token=bos, eos_token=eos))

    probes = []
    with open(os.path.join(HERE, "probes.txt"), encoding="utf-8") as f:
        for line in f.read().split("\n"):
            if line:
                probes.append(render_case(env.from_string(line), {"template": line},
                                          messages=PROBE_MESSAGES, add_generation_prompt=True, bos_token="<s>", eos_token="</s>"))

    out = {
        "generator": "gen_fixtures.py, Jinja2 %s" % jinja2.__version__,
        "date": args.date,
        "tokens": {os.path.basename(k): {"bos": v[0], "eos": v[1]} for k, v in TEMPLATES.items()},
        "conversations": CONVERSATIONS,
        "cases": cases,
        "tool_conversations": TOOL_CONVERSATIONS,
        "tool_cases": tool_cases,
        "probe_messages": PROBE_MESSAGES,
        "probes": probes,
    }
    json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
