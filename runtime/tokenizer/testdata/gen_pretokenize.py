#!/usr/bin/env python3
"""Generates pretokenize_golden.json: reference pre-tokenizer splits for the
Go tests, computed with the third-party `regex` module the way llama.cpp's
unicode_regex_split runs its regex lists:

  * each regex of a list refines the chunks left by the previous one; text
    between two matches becomes a chunk of its own;
  * a regex that uses \\p{..} runs on a "collapsed" text where every
    non-ASCII code point is replaced by one character standing for its class
    (non-ASCII whitespace by \\v), and \\p{X} becomes [<class char><ASCII
    members>], as llama.cpp does before handing the regex to std::regex;
  * a regex without \\p{..} runs on the code points with non-ASCII
    whitespace replaced by \\v (llama.cpp's std::wregex path);
  * \\s and \\S are the ASCII sets of std::regex.

llama.cpp implements the GPT-2 and Llama 3 regexes with custom code that is
meant to be equivalent; here they run through the regex engine like the
others, so the Go implementation is checked against regex semantics.

Run: python3 gen_pretokenize.py > pretokenize_golden.json
"""
import json
import random
import unicodedata

import regex

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3 = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

DS_LETTER_RANGES = """41-5A 61-7A B5 C0-D6 D8-F6 F8-1BA 1BC-1BF 1C4-293 295-2AF 370-373 376 377 37B-37D 37F 386
388-38A 38C 38E-3A1 3A3-3F5 3F7-481 48A-52F 531-556 10A0-10C5 13A0-13F5 13F8-13FD 1C90-1CBA 1CBD-1CBF
1D00-1D2B 1D6B-1D77 1D79-1D9A 1E00-1F15 1F18-1F1D 1F20-1F45 1F48-1F4D 1F50-1F57 1F59 1F5B 1F5D 1F5F-1F7D
1F80-1FB4 1FB6-1FBC 1FBE 1FC2-1FC4 1FC6-1FCC 1FD0-1FD3 1FD6-1FDB 1FE0-1FEC 1FF2-1FF4 1FF6-1FFC 2102 2107
210A-2113 2115 2119-211D 2124 2126 2128 212A-212D 212F-2134 2139 213C-213F 2145-2149 214E 2183 2184
2C00-2C7B 2C7E-2CE4 2CEB-2CEE 2CF2 2CF3 A640-A66D A680-A69B A722-A76F A771-A787 A78B-A78E AB70-ABBF
FB00-FB06 FB13-FB17 FF21-FF3A FF41-FF5A 10400-1044F 104B0-104D3 104D8-104FB 10C80-10CB2 10CC0-10CF2
118A0-118DF 1E900-1E943"""


def ranges_class(spec):
    parts = []
    for tok in spec.split():
        a, _, b = tok.partition("-")
        a = int(a, 16)
        b = int(b, 16) if b else a
        parts.append(regex.escape(chr(a)) + ("-" + regex.escape(chr(b)) if b != a else ""))
    return "".join(parts)


DS_LETTERS = r"\s?[" + ranges_class(DS_LETTER_RANGES) + "]+"
DS_PUNCT = r"\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+"
DS_CJK = "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+"

PRE = {
    "gpt-2": [GPT2],
    "llama-bpe": [LLAMA3],
    "qwen2": [QWEN2],
    "deepseek-llm": ["[\r\n]", DS_LETTERS, DS_PUNCT, r"\s+$", DS_CJK, r"\p{N}+"],
    "deepseek-coder": ["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", DS_CJK, r"\p{N}"],
    "falcon": [r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
    "starcoder": [r"\p{N}", GPT2],
    "default": [r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
}

WS = {0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000} | set(range(0x2000, 0x200B))
ASCII_WS = r"\t\n\x0b\x0c\r "
CLASS_CHAR = {"N": "\uE0D1", "L": "\uE0D2", "P": "\uE0D3", "M": "\uE0D4", "S": "\uE0D5"}
OTHER_CHAR = "\uE0D0"
ASCII_MEMBERS = {
    "N": "0-9",
    "L": "A-Za-z",
    "P": r"!-#%-*,-/:-;?-@\[-\]_\{\}",
    "S": r"\$\+<-\>\^`\|",
}


def collapse(text):
    out = []
    for ch in text:
        cp = ord(ch)
        if cp < 128:
            out.append(ch)
        elif cp in WS:
            out.append("\x0b")
        else:
            cat = unicodedata.category(ch)[0]
            out.append(CLASS_CHAR.get(cat, OTHER_CHAR))
    return "".join(out)


def convert(pattern):
    """Rewrite a llama.cpp regex for the collapsed text, or None if it has no \\p{}."""
    if r"\p{" not in pattern:
        return None
    out = []
    i = 0
    inside = False
    while i < len(pattern):
        c = pattern[i]
        if c == "[" and (i == 0 or pattern[i - 1] != "\\"):
            inside = True
            out.append(c)
            i += 1
            continue
        if inside and c == "]" and pattern[i - 1] != "\\":
            inside = False
            out.append(c)
            i += 1
            continue
        if pattern.startswith(r"\p{", i):
            j = pattern.index("}", i)
            cat = pattern[i + 3 : j]
            body = CLASS_CHAR[cat] + ASCII_MEMBERS[cat]
            out.append(body if inside else "[" + body + "]")
            i = j + 1
            continue
        if pattern.startswith(r"\s", i) or pattern.startswith(r"\S", i):
            neg = pattern[i + 1] == "S"
            if inside:
                assert not neg
                out.append(ASCII_WS)
            else:
                out.append(("[^" if neg else "[") + ASCII_WS + "]")
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def plain(pattern):
    out = []
    i = 0
    inside = False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            if pattern[i + 1] in "sS":
                neg = pattern[i + 1] == "S"
                if inside:
                    out.append(ASCII_WS)
                else:
                    out.append(("[^" if neg else "[") + ASCII_WS + "]")
                i += 2
                continue
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "[":
            inside = True
        elif c == "]":
            inside = False
        out.append(c)
        i += 1
    return "".join(out)


def split(text, patterns):
    collapsed = collapse(text)
    wide = "".join("\x0b" if ord(ch) in WS else ch for ch in text)
    chunks = [len(text)] if text else []
    for pat in patterns:
        conv = convert(pat)
        src = collapsed if conv is not None else wide
        rx = regex.compile(conv if conv is not None else plain(pat), flags=regex.VERSION0)
        new = []
        start = 0
        for n in chunks:
            piece = src[start : start + n]
            last = 0
            for m in rx.finditer(piece):
                if m.start() > last:
                    new.append(m.start() - last)
                new.append(m.end() - m.start())
                last = m.end()
            if last < n:
                new.append(n - last)
            start += n
        chunks = new
    return chunks


POOL = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    + list("0123456789") * 2
    + list(" ") * 12
    + list("\n") * 4
    + list("\r\t\x0b\x0c")
    + list("'") * 4
    + list("sStTdDmMrReEvVlL") * 2
    + list("!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~")
    + list("\x00\x01\x1f\x7f")
    + list("\u00a0\u0085\u1680\u2000\u2003\u200a\u2028\u2029\u202f\u205f\u3000")
    + list("éÀßµøÆĳſǅ")
    + list("αβγΩώΐΊιῼᾼ")
    + list("жЖщЁ")
    + list("\u0301\u0308\u0903\u20dd")
    + list("٣٤५²½Ⅻ〇")
    + list("我想在工作天中文龥가힣ㄱ")
    + list("あアｱ")
    + list("ｆＡ！＠～、。「」‘’“”…—")
    + list("€£¥©®°±×÷")
    + list("😀🦙🚀\u200d\ufe0f✅")
    + list("ก่ា")
    + list("\ue000\u0378\ufffd")
    + list("\u2126\u212a\u1fbe\u1f7d")
)

FIXED = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "\n\n\n", "\t\n", "Hello world", " Hello world",
    "Hello World!", "Hello, world!", " this is 🦙.cpp", "w048 7tuijk dsdfhu", "нещо на Български",
    "кான்", "🚀 (normal) 😶‍🌫️ (multiple emojis concatenated) ✅ (only emoji that has its own token)",
    "    Hello\n    Hello", " (", "\n =", "' era", "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～",
    "3", "33", "333", "3333", "33333", "3333333", "Cửa Việt", " discards",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
    "''''''```````\"\"\"\"......!!!!!!??????", "------=======", "3.3 3..3 3...3",
    "a  b   c\t\td \n e \r\n f", "x \u3000y\u00a0 z\u2028w", "end with space ", "end with spaces   ",
    "end\n", "tabs\t\t", "'", "'s", "x's", "'S 'T 'Re 'vE 'Ll 'd", "' s", "don't", "ＡＢＣ！？",
    "ΆΈΉ ώ ῼ ᾼ Ω K", "١٢٣ ४५६ ²³ ½ ⅫⅩ", "e\u0301 a\u0308 क\u0903", "\x00\x01 \x7f",
    "price: $100, 50% off; a+b=c <tag> ^_^ `code` |pipe| ~tilde~",
    "\r\n\r\n  \n", " \n ", "\n  x", "foo\n\n\tbar", "🦙🦙 3 33 333 3333",
]


def main():
    rnd = random.Random(20240601)
    inputs = list(FIXED)
    for _ in range(400):
        n = rnd.randint(1, 24)
        inputs.append("".join(rnd.choice(POOL) for _ in range(n)))
    out = {"inputs": inputs, "splits": {}}
    for name, patterns in PRE.items():
        out["splits"][name] = [split(s, patterns) for s in inputs]
    json.dump(out, __import__("sys").stdout, ensure_ascii=True, separators=(",", ":"))


if __name__ == "__main__":
    main()
