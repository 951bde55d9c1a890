#!/usr/bin/env python3
"""Writes golden/<case>.txt: the conversations of conversations.json rendered
with ../templates/openai-gpt-oss-120b.jinja by llama.cpp's own Jinja engine
(common/jinja of the llama.cpp 2026-08 tarball in shared/device/peers), fed
as llama.cpp's common_chat_params_init_gpt_oss feeds it: reasoning_content
copied to "thinking", and the content of a message with tool calls and
reasoning dropped; tool call arguments as objects (func_args_not_string);
add_generation_prompt true; strftime_now at midnight UTC of "date".

The renderer is a 25-line C++ program over common/jinja (render.cpp here):
  L=llama.cpp; g++ -std=c++17 -O1 -I$L/common -I$L/vendor -o render render.cpp \\
      $L/common/jinja/*.cpp $L/common/unicode.cpp
  TZ=UTC ./gen_golden.py ./render
"""
import calendar, datetime, json, os, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
render = sys.argv[1]
conv = json.load(open(os.path.join(HERE, "conversations.json")))
day = datetime.date.fromisoformat(conv["date"])
epoch = calendar.timegm(day.timetuple())
template = os.path.join(HERE, "..", "templates", "openai-gpt-oss-120b.jinja")
os.makedirs(os.path.join(HERE, "golden"), exist_ok=True)
for case in conv["cases"]:
    msgs = []
    for m in case["messages"]:
        m = dict(m)
        if isinstance(m.get("reasoning_content"), str):
            m["thinking"] = m["reasoning_content"]
            if m.get("tool_calls"):
                m.pop("content", None)
        msgs.append(m)
    ctx = {"messages": msgs, "bos_token": "<|startoftext|>", "eos_token": "<|return|>", "enable_thinking": True}
    if case.get("tools"):
        ctx["tools"] = conv["tools"]
    if "reasoning_effort" in case:
        ctx["reasoning_effort"] = case["reasoning_effort"]
    ctx["add_generation_prompt"] = True
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(ctx, f, ensure_ascii=False)
    out = subprocess.run([render, template, f.name, str(epoch)], check=True, capture_output=True,
                         env=dict(os.environ, TZ="UTC")).stdout
    os.unlink(f.name)
    with open(os.path.join(HERE, "golden", case["name"] + ".txt"), "wb") as g:
        g.write(out)
    print(case["name"], len(out), "bytes")
