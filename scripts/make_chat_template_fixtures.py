"""Chat-template fixtures for swift-lora's Jinja renderer (Sources/LoRATokenizers/Tokenizers/ChatTemplate.swift).

Install: pip install "transformers>=4.45" "jinja2>=3.1.6"
Run:     python scripts/make_chat_template_fixtures.py

Reads the committed templates Tests/LoRAKitTests/Fixtures/chat_templates/*.jinja (verbatim copies of
real chat templates; where each came from is in SOURCES below) and renders them with transformers' own
renderer, `transformers.utils.chat_template_utils.render_jinja_template` (jinja2's
ImmutableSandboxedEnvironment with trim_blocks/lstrip_blocks, exactly as `apply_chat_template` does),
for every template x conversation x add_generation_prompt, plus a few cases with extra kwargs (tools,
date_string). It also renders SNIPPETS, small templates that pin down one jinja2 behaviour each, with
transformers' compiled environment. Writes chat_templates/expected.json; a case whose template raises
records the exception type and message instead of an output.
"""
import json
from pathlib import Path

from transformers.utils.chat_template_utils import _compile_jinja_template, render_jinja_template

root = Path(__file__).resolve().parent.parent
folder = root / "Tests/LoRAKitTests/Fixtures/chat_templates"

# name -> (repository, path, commit, note), and the special tokens the model's tokenizer passes.
SOURCES = {
    "smollm2": ("GGUF metadata tokenizer.chat_template", "SmolLM2-135M-Instruct.Q4_1.gguf", None,
                "HuggingFaceTB/SmolLM2-135M-Instruct, read with gguf.GGUFReader"),
    "qwen2": ("sgl-project/sglang", "python/sglang/lang/chat_template.py", "01d2a3d0d57bc35da92de3833d72412c0b448210",
              "JSON string quoted in a comment from Qwen2-72B-Instruct's tokenizer_config.json"),
    "qwen2.5": ("ggerganov/llama.cpp", "models/templates/Qwen-Qwen2.5-7B-Instruct.jinja", "c392e5094deaf2d1a7c18683214f007fad3fe42b",
                "identical to huggingface/huggingface.js packages/jinja/test/e2e.test.js 'Qwen/Qwen2.5-7B-Instruct'"),
    "llama3": ("abetlen/llama-cpp-python", "llama_cpp/llama_chat_format.py", "3691546f1c9e0c1bf93323dff02230bd959cf562",
               "LLAMA3_INSTRUCT_CHAT_TEMPLATE, from meta-llama/Meta-Llama-3-8B-Instruct's tokenizer_config.json"),
    "llama3.1": ("ggerganov/llama.cpp", "models/templates/meta-llama-Llama-3.1-8B-Instruct.jinja", "c392e5094deaf2d1a7c18683214f007fad3fe42b",
                 "identical to huggingface/huggingface.js e2e.test.js 'meta-llama/Llama-3.1-8B-Instruct'"),
    "llama3.2": ("ggerganov/llama.cpp", "models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja", "c392e5094deaf2d1a7c18683214f007fad3fe42b",
                 "rendered with date_string so the output does not depend on today's date"),
    "mistral-v0.1": ("abetlen/llama-cpp-python", "llama_cpp/llama_chat_format.py", "3691546f1c9e0c1bf93323dff02230bd959cf562",
                     "MISTRAL_INSTRUCT_CHAT_TEMPLATE (mistralai/Mistral-7B-Instruct-v0.1); identical to huggingface.js e2e.test.js "
                     "'TheBloke/Mistral-7B-Instruct-v0.1-GPTQ'"),
    "mixtral-v0.1": ("abetlen/llama-cpp-python", "llama_cpp/llama_chat_format.py", "3691546f1c9e0c1bf93323dff02230bd959cf562",
                     "MIXTRAL_INSTRUCT_CHAT_TEMPLATE (mistralai/Mixtral-8x7B-Instruct-v0.1); identical to llama.cpp "
                     "tests/test-chat-template.cpp 'mistralai/Mistral-7B-Instruct-v0.2 (NOTE: Old pre-v1 without a system prompt)'"),
    "mistral-v0.2": ("ggerganov/llama.cpp", "tests/test-chat-template.cpp", "c392e5094deaf2d1a7c18683214f007fad3fe42b",
                     "test case 'mistralai/Mistral-7B-Instruct-v0.2 (mistralai 'v1' template with a system prompt)'"),
    "mistral-v0.3": ("huggingface/huggingface.js", "packages/jinja/test/e2e.test.js", "fe42e68017ffc76d09922ea8f9b38a6964345710",
                     "test case 'mistralai/Mistral-7B-Instruct-v0.3 (JSON Schema)'"),
    "mistral-large-2407": ("ggerganov/llama.cpp", "tests/test-chat-template.cpp", "c392e5094deaf2d1a7c18683214f007fad3fe42b",
                           "test case 'Mistral-Large-Instruct-2407 (mistralai 'v3' template ...)'"),
    "zephyr": ("huggingface/alignment-handbook", "recipes/zephyr-7b-beta/sft/config_full.yaml", "925acdfe4b2b4e38c3dabd1851bc418f0b656351",
               "chat_template of the zephyr-7b-beta recipe; identical to huggingface.js e2e.test.js 'HuggingFaceH4/zephyr-7b-beta'"),
}

TOKENS = {
    "smollm2": ("<|im_start|>", "<|im_end|>"),
    "qwen2": (None, "<|im_end|>"),
    "qwen2.5": (None, "<|im_end|>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3.1": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3.2": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistral-v0.1": ("<s>", "</s>"),
    "mixtral-v0.1": ("<s>", "</s>"),
    "mistral-v0.2": ("<s>", "</s>"),
    "mistral-v0.3": ("<s>", "</s>"),
    "mistral-large-2407": ("<s>", "</s>"),
    "zephyr": ("<s>", "</s>"),
}

# Extra kwargs every render of a template gets.
BASE_EXTRA = {"llama3.2": {"date_string": "02 Mar 2025"}}

CONVERSATIONS = {
    "system_multiturn": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello! Who are you?"},
        {"role": "assistant", "content": "I am an assistant. How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ],
    "no_system": [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3 + 3?"},
    ],
    "single_user": [
        {"role": "user", "content": "Hi"},
    ],
    "assistant_last": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ],
    "special_content": [
        {"role": "system", "content": "Use 'single' and \"double\" quotes.\nSecond line\twith a tab.  "},
        {"role": "user", "content": "  Line one\nLine two\r\n\n    indented \\ backslash {{ not_a_var }} {% if x %} {# c #}\n"},
        {"role": "assistant", "content": "\n  héllo 中文 👍🏽 👨‍👩‍👧 e\u0301 ß İ  \n"},
        {"role": "user", "content": "</s><|im_end|>[INST] <|eot_id|> end"},
    ],
    "alternation_broken": [
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"},
    ],
    "missing_content": [
        {"role": "user", "content": "Ping"},
        {"role": "assistant"},
        {"role": "user", "content": "Pong?"},
    ],
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather in a city, \"now\".",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name, e.g. Zürich"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    }
]

# (template, conversation, add_generation_prompt, extra) beyond the full grid.
EXTRA_CASES = [
    ("llama3.1", "system_multiturn", True, {"tools": TOOLS}),
    ("llama3.1", "no_system", True, {"tools": TOOLS, "tools_in_user_message": False, "date_string": "15 Jan 2025"}),
    ("llama3.2", "system_multiturn", True, {"tools": TOOLS, "date_string": "02 Mar 2025"}),
    ("qwen2.5", "system_multiturn", True, {"tools": TOOLS}),
    ("qwen2.5", "no_system", False, {"tools": TOOLS}),
    ("mistral-v0.3", "no_system", False, {"tools": TOOLS}),
    ("mistral-large-2407", "system_multiturn", False, {"tools": TOOLS}),
]

# Small templates that each pin down one jinja2 behaviour: (template, context).
SNIPPETS = [
    # whitespace control, trim_blocks, lstrip_blocks, comments, raw, trailing newline
    ("  {% if true %}\n  x\n  {% endif %}\n", {}),
    ("a  {% if true %}b{% endif %}  \n  {#c#}\n d", {}),
    ("{{ x }}\n{% raw %}  {{ y }}{% endraw %}\nz", {"x": 1}),
    ("a\n  {%- if true -%}\n  b  \n  {%- endif %}\n  c", {}),
    ("a  {%+ if true %}b{% endif +%}\nc", {}),
    ("x {{- ' y ' -}} z\n{{ 'w' }}\n\n", {}),
    ("line1\r\nline2\r\n", {}),
    ("{% for i in [1, 2] %}\n    {{ i }}\n{% endfor %}\n", {}),
    ("\t{% if true %}tab{% endif %}\n {# comment #} \nafter", {}),
    ("{#- leading comment -#}\n\n  text", {}),
    ("{% for m in ms %}{{ m }}{% if not loop.last %}, {% endif %}{% endfor %}", {"ms": ["a", "b", "c"]}),
    # scoping
    ("{% for i in [1,2] %}{% if i == 2 %}[{{ x }}]{% endif %}{% set x = i %}{% endfor %}{{ x }}", {}),
    ("{% set x = 5 %}{% for i in [1,2] %}[{{ x }}]{% set x = i %}[{{ x }}]{% endfor %}{{ x }}", {}),
    ("{% set x = 5 %}{% if true %}{% set x = 6 %}{% endif %}{{ x }}", {}),
    ("{% set ns = namespace(a=1, found=false) %}{% for i in [1,2] %}{% set ns.a = ns.a + i %}{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.a }} {{ ns.found }}", {}),
    ("{% set a, b = [1, 2] %}{{ b }}{{ a }}", {}),
    ("{% set x %}inner {{ 1 + 1 }}{% endset %}[{{ x }}]", {}),
    ("{% macro f(a, b='x') %}[{{ a }}{{ b }}]{% endmacro %}{{ f(1) }}{{ f(2, b='y') }}{{ f(b=3, a=4) }}", {}),
    # loops
    ("{% for a in [3,4] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.length }}{{ loop.first }}{{ loop.last }}|{% else %}E{% endfor %}{% for a in [] %}{% else %}E{% endfor %}", {}),
    ("{% for x in [1,2,3,4] if x > 1 %}{{ loop.index }}/{{ loop.length }} {% endfor %}", {}),
    ("{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("{% for x in [1,2,3] %}{{ loop.previtem is defined }}{{ loop.nextitem }}{{ loop.cycle('a','b') }} {% endfor %}", {}),
    ("{% for c in 'héy' %}{{ c }}.{% endfor %}", {}),
    # literals, printing, arithmetic
    ("{{ 1/2 }} {{ 4/2 }} {{ 7//2 }} {{ -7//2 }} {{ -7 % 3 }} {{ 7.5 % 2 }} {{ 2**10 }} {{ 2**-1 }} {{ 1e20 }} {{ 1e-5 }} {{ 0.1+0.2 }} {{ 1_000 }}", {}),
    ("{{ [1,'a',none,true,1.5,{'k':'v'}] }} {{ 'it''s' }} {{ \"a'b\" }} {{ ('x',) }} {{ (1, 2) }} {{ 'q\"' ~ \"'\" }}", {}),
    ("{{ none }} {{ true }} {{ True }} {{ 1.0 }} {{ 3 }} {{ 1e16 }} {{ 1e15 }} {{ 12345678.9 }} {{ -0.0 }} {{ 0.0001 }} {{ 1.5e-10 }}", {}),
    ("{{ 'ab\\\\cd' }} {{ '\\x41\\101\\u00e9\\q\\n|' }} {{ 'a' 'b' }}", {}),
    ("{{ 'a' ~ 1 ~ none ~ undefined_thing ~ [1] }} {{ 'ab' * 3 }} {{ [0] * 2 }} {{ [1] + [2] }}", {}),
    ("{{ -1|abs }} {{ not true == false }} {{ - 2 ** 2 }} {{ 1 + 2 * 3 - 4 / 2 }} {{ 10 - 2 - 3 }}", {}),
    ("{{ 1 if false }}|{{ 'y' if 0 else 'n' }}|{{ x or 'def' }} {{ 0 or '' }} {{ 1 and 2 }} {{ none and 1 }}", {}),
    # comparisons and tests
    ("{{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} {{ [1,2] == [1,2] }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ {'a':1} == {'a':1} }} {{ 'B' < 'a' }}", {}),
    ("{{ 'a' in 'cat' }} {{ 1 in [1] }} {{ 'k' in {'k':1} }} {{ 'z' not in 'abc' }} {{ 'x' in u }}", {}),
    ("{{ x is defined }} {{ y is none }} {{ y is not none }} {{ 'a' is string }} {{ 1 is number }} {{ true is number }} {{ 1 is integer }} {{ true is integer }} {{ 1.0 is float }}", {"y": None}),
    ("{{ {} is mapping }} {{ [] is iterable }} {{ 'a' is iterable }} {{ 1 is iterable }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 'ab' is lower }} {{ 'AB' is upper }}", {}),
    ("{{ none is sameas none }} {{ false is sameas false }} {{ 1 is eq 1 }} {{ 2 is gt 1 }} {{ 'a' is in 'abc' }} {{ x is undefined }} {{ true is boolean }} {{ range is callable }}", {}),
    # attribute and item access
    ("{{ m.role }}|{{ m['role'] }}|{{ m.content }}|{{ m.content is defined }}|{{ m.items is defined }}|{{ m.get('role') }}|{{ m.get('x', 'dflt') }}", {"m": {"role": "user"}}),
    ("{{ l[0] }} {{ l[-1] }} {{ l[5] }}| {{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ l[::2] }} {{ 'abcdef'[1:4] }} {{ 'abc'[::-1] }} {{ 'abc'[-1] }}", {"l": [1, 2, 3]}),
    ("{{ d.keys() }} {{ d.values()|list }} {{ d.items()|list }} {{ d|items|list }} {{ d|length }} {{ d.items()|length }}", {"d": {"z": 1, "a": [2]}}),
    ("{{ l.0 }} {{ m.x.y is defined }}", {"l": ["first"], "m": {"x": {}}}),
    # string methods
    ("{{ '  x  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '  a '.lstrip() }}|{{ ' a  '.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a b  c '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a,b,c'.rsplit(',', 1) }}", {}),
    ("{{ 'abc'.upper() }}{{ 'ABC'.lower() }}{{ 'abc'.startswith('a') }}{{ 'abc'.endswith(('c','d')) }}{{ 'hello world'.title() }}{{ \"they're bill's\".title() }}{{ 'hELLO'.capitalize() }}{{ 'aXa'.replace('a', 'b') }}{{ 'a-b-c'.replace('-', '+', 1) }}", {}),
    ("{{ 'abcabc'.find('c') }} {{ 'abcabc'.rfind('c') }} {{ 'abc'.find('z') }} {{ 'aaa'.count('a') }} {{ '-'.join(['a', 'b']) }} {{ 'a\\nb\\r\\nc'.splitlines() }} {{ '12'.isdigit() }} {{ 'prefix_x'.removeprefix('prefix_') }}", {}),
    # filters
    ("{{ '  x  '|trim }}|{{ 'xxyxx'|trim('x') }}|{{ 'abc'|length }}|{{ 'é👍🏽'|length }}|{{ [1,2]|length }}|{{ undefined_v|length }}|{{ 'Hello World-foo bar(baz'|title }}|{{ 'hELLO wORLD'|capitalize }}|{{ 'ab'|upper }}{{ 'AB'|lower }}", {}),
    ("{{ [1,2,3]|first }}{{ [1,2,3]|last }}{{ 'xyz'|first }}{{ [1,2]|join('-') }}{{ [1,2]|join }}{{ 'x'|default('y') }}{{ undefined_v|default('y') }}{{ ''|default('y', true) }}{{ ''|d('z', boolean=true) }}{{ none|default('n') }}", {}),
    ("{{ 3|string + 'x' }} {{ '42'|int + 1 }} {{ 'x'|int }} {{ '3.5'|float }} {{ 3.9|int }} {{ '3.5'|int }} {{ 'x'|int(7) }} {{ '0x1A'|int(0, 16) }} {{ 5|float }}", {}),
    ("{{ [3,1,2]|sort }} {{ ['b','A','c']|sort }} {{ ['b','A','c']|sort(case_sensitive=true) }} {{ [1,2,3]|reverse|list }} {{ 'abc'|reverse }} {{ [1,1,2,'a','A']|unique|list }} {{ [1,2]|sum }} {{ [1.5,2]|sum }}", {}),
    ("{{ 2.567|round(2) }} {{ 2.5|round }} {{ 3.5|round }} {{ 7|round }} {{ 2.1|round(0, 'ceil') }} {{ 2.9|round(0, 'floor') }} {{ [3,1,2]|min }} {{ [3,1,2]|max }} {{ {'b':1,'a':2}|dictsort }}", {}),
    ("{{ ms|selectattr('role','equalto','user')|list }} {{ ms|rejectattr('role','equalto','user')|map(attribute='c')|list }} {{ ms|map(attribute='role')|join(',') }} {{ ms|selectattr('c')|list|length }}", {"ms": [{"role": "user", "c": "1"}, {"role": "assistant", "c": ""}, {"role": "user"}]}),
    ("{{ [1,2,3,4]|select('odd')|list }} {{ [1,2,3,4]|reject('odd')|list }} {{ ['a','b']|map('upper')|list }} {{ [0,1,'',none,'x']|select|list }} {{ ms|map(attribute='c', default='-')|list }}", {"ms": [{"c": 1}, {}]}),
    ("{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ [] | tojson(indent=2) }}|{{ {} | tojson(indent=2) }}|{{ [1,[2,{}]]|tojson(indent=1) }}|{{ d|tojson(sort_keys=true) }}|{{ d|tojson(separators=(',', ':')) }}", {"d": {"b": 1, "a": [True, None, 1.5, "x"]}}),
    ("{{ 'é\"\\\\\\n\\t\\u0001/<>&'|tojson }} {{ 'é'|tojson(ensure_ascii=true) }} {{ '👍'|tojson(ensure_ascii=true) }} {{ 1e20|tojson }} {{ 3|tojson }} {{ none|tojson }}", {}),
    ("{{ t|tojson(indent=4) }}", {"t": TOOLS}),
    ("{{ 'a\\nb\\n\\nc'|indent }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent(2, blank=true) }}|{{ '<a & \"b\">'|e }}|{{ 'x'|safe }}", {}),
    ("{% filter upper %}shout {{ 'it' }}{% endfilter %}", {}),
    ("{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(3, 0, -1)|list }} {{ dict(a=1, b='x') }} {{ namespace(a=1) }}", {}),
    # Markup (|safe, |e) escapes plain strings added to it; select/map on a falsy value yield nothing
    ("{{ \"it's \"|safe + '<b>' }}|{{ '<x> ' + 'y'|safe }}|{{ ('a'|safe) ~ '<' }}|{{ '<'|e }}|{{ ['x'|safe] }}|{{ ('<'|e)|length }}|{{ 'a&'|e|upper }}", {}),
    ("{{ 'Use ' + 'the'|safe + ' ' + t|tojson }}", {"t": {"q": "\"x\" & <y>"}}),
    ("{{ tools|selectattr('type', 'equalto', 'code')|list|length }} {{ none|map(attribute='x')|list }} {{ ''|select|list }}", {"tools": None}),
    ("{{ 3.0 % -3 }} {{ -3.0 % 3 }} {{ 7.5 // 2 }} {{ -7.5 // 2 }} {{ 2 ** 0.5 }} {{ 10 ** -2 }}", {}),
    ("{{ 'a\nb'|indent(2) }}|{{ x|indent }}", {"x": ["not", "a", "string"]}),
    ("{% if false %}{{ x|wordwrap(3) }}{% endif %}rendered", {"x": "abc"}),
    # transformers' extensions
    ("{% generation %}kept{% endgeneration %}|{{ raise_exception is defined }}", {}),
    # errors
    ("{{ x.y }}", {}),
    ("{{ m['role'] + m.content }}", {"m": {"role": "u"}}),
    ("{{ 'a' + 1 }}", {}),
    ("{{ raise_exception('Custom failure: ' ~ 42) }}", {}),
    ("{{ foo() }}", {}),
    ("{{ 1 / 0 }}", {}),
    ("{{ [1].append(2) }}", {}),
    ("{{ {'a': 1}|tojson ~ x|tojson }}", {}),
    ("{% for x in none %}{% endfor %}", {}),
    ("{{ [1,2]|selectattr('x')|length }}", {}),
]


def render_case(template, messages, agp, extra):
    bos, eos = TOKENS[template]
    kwargs = {}
    if bos is not None:
        kwargs["bos_token"] = bos
    if eos is not None:
        kwargs["eos_token"] = eos
    kwargs.update(extra)
    tools = kwargs.pop("tools", None)
    source = (folder / f"{template}.jinja").read_text()
    # apply_chat_template drops None-valued keys; our messages simply omit them.
    try:
        rendered, _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=source,
                                            add_generation_prompt=agp, **kwargs)
        return {"output": rendered[0]}
    except Exception as e:  # noqa: BLE001 - recorded for the Swift side to match
        return {"error_type": type(e).__name__, "error": str(e)}


def main():
    cases = []
    for template in SOURCES:
        for conv_name, messages in CONVERSATIONS.items():
            for agp in (False, True):
                extra = dict(BASE_EXTRA.get(template, {}))
                case = {"template": template, "conversation": conv_name, "add_generation_prompt": agp,
                        "bos_token": TOKENS[template][0], "eos_token": TOKENS[template][1], "extra": extra}
                case.update(render_case(template, messages, agp, extra))
                cases.append(case)
    for template, conv_name, agp, extra in EXTRA_CASES:
        case = {"template": template, "conversation": conv_name, "add_generation_prompt": agp,
                "bos_token": TOKENS[template][0], "eos_token": TOKENS[template][1], "extra": extra}
        case.update(render_case(template, CONVERSATIONS[conv_name], agp, extra))
        cases.append(case)

    snippets = []
    for source, context in SNIPPETS:
        entry = {"template": source, "context": context}
        try:
            entry["output"] = _compile_jinja_template(source).render(**context)
        except Exception as e:  # noqa: BLE001
            entry["error_type"] = type(e).__name__
            entry["error"] = str(e)
        snippets.append(entry)

    sources = {name: {"repository": r, "path": p, "commit": c, "note": n} for name, (r, p, c, n) in SOURCES.items()}
    out = {"sources": sources, "conversations": CONVERSATIONS, "cases": cases, "snippets": snippets}
    (folder / "expected.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    errors = sum("error" in c for c in cases)
    print(f"{len(cases)} cases ({errors} raise), {len(snippets)} snippets -> {folder / 'expected.json'}")


if __name__ == "__main__":
    main()
