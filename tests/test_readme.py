"""README.zh-CN.md, the Chinese course handout, kept in step with README.md.

The Chinese handout is organised by the course's homework, not translated line
by line, so what is checked is what must not drift: every command in its code
blocks that runs a project script is one the English README gives (same
script, same flags, same values; comments may differ), every picture it shows
exists and is one the English README shows, its output blocks (the layer
table, the evaluation table) are the English ones verbatim, and each README
links the other at its top. And since a command copied from README.md is only
as good as README.md, every project command the Chinese handout shows, in code
blocks or inline, must parse with its script's own parse_args.
"""
import importlib
import importlib.util
import os
import re
import shlex

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP_LINES = 10      # "at the top": within the first lines of the file

FENCE = re.compile(r'^[ \t]*```([^`\n]*)\n(.*?)^[ \t]*```[ \t]*$', re.M | re.S)
INLINE_CODE = re.compile(r'(?<!`)`([^`\n]+)`(?!`)')
PICTURE = re.compile(r'!\[[^\]]*\]\(\s*<?([^)\s>]+)|<img\s[^>]*src="([^"]+)"')
SHELL_INFO = ('sh', 'bash', 'shell', 'console')


def _read(name):
    with open(os.path.join(REPO, name), encoding='utf-8') as f:
        return f.read()


def _code_blocks(text):
    """[(info string, body)] of the fenced code blocks, in order."""
    return [(info.strip().lower(), body) for info, body in FENCE.findall(text)]


def _tokens(line):
    """The shell words of one command line, comments dropped."""
    return tuple(shlex.split(line, comments=True))


def _runs_project_script(tokens):
    """True for `python <script>.py ...`, `.venv/bin/python ...` (also after && or ;)."""
    for i, token in enumerate(tokens):
        if token.endswith('.venv/bin/python'):
            return True
        if os.path.basename(token) in ('python', 'python3') and \
                i + 1 < len(tokens) and tokens[i + 1].endswith('.py'):
            return True
    return False


def _command_lines(body):
    """Lines of a code block, with backslash continuations joined."""
    return re.sub(r'\\\n[ \t]*', ' ', body).splitlines()


def _project_commands(name, inline=False):
    """[(line, tokens)] of every project-script command in the code blocks of README
    `name` (and with inline=True, in its inline code too)."""
    text = _read(name)
    lines = [line for _, body in _code_blocks(text) for line in _command_lines(body)]
    if inline:
        lines += INLINE_CODE.findall(FENCE.sub('', text))
    commands = []
    for line in lines:
        if 'python' not in line:
            continue
        try:
            tokens = _tokens(line)
        except ValueError as e:   # an unclosed quote: a broken command
            raise AssertionError('{}: cannot parse {!r}: {}'.format(name, line, e))
        if _runs_project_script(tokens):
            commands.append((line.strip(), tokens))
    return commands


def _chinese_commands(inline=False):
    return _project_commands('README.zh-CN.md', inline)


def _english_commands():
    """The token tuples of every command line in README.md, in blocks or inline code."""
    text = _read('README.md')
    lines = [line for _, body in _code_blocks(text) for line in _command_lines(body)]
    lines += INLINE_CODE.findall(FENCE.sub('', text))
    commands = set()
    for line in lines:
        try:
            commands.add(_tokens(line))
        except ValueError:        # prose in an output block, not a command
            pass
    return commands


def _script_calls(tokens):
    """[(script.py, [args])] of the `python <script>.py args` calls on one command line."""
    calls = []
    for i, token in enumerate(tokens[:-1]):
        if (token.endswith('/python') or token in ('python', 'python3')) and \
                tokens[i + 1].endswith('.py'):
            args = []
            for arg in tokens[i + 2:]:
                if arg in ('&&', '||', ';', '|', '&'):
                    break
                args.append(arg)
            calls.append((tokens[i + 1], args))
    return calls


def _load(script):
    """The module of a project script given by its path from the top (e.g. finetune.py,
    tests/mutations.py)."""
    if '/' not in script:
        return importlib.import_module(script[:-len('.py')])
    spec = importlib.util.spec_from_file_location(
        'readme_' + script.replace('/', '_')[:-len('.py')], os.path.join(REPO, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pictures(text):
    return [markdown or html for markdown, html in PICTURE.findall(text)]


def test_english_readme_links_the_chinese_one_at_its_top():
    top = _read('README.md').splitlines()[:TOP_LINES]
    assert any('](README.zh-CN.md)' in line for line in top), \
        'README.md must link README.zh-CN.md in its first {} lines'.format(TOP_LINES)


def test_chinese_readme_links_the_english_one_at_its_top():
    top = _read('README.zh-CN.md').splitlines()[:TOP_LINES]
    assert any('English' in line and '](README.md)' in line for line in top), \
        'README.zh-CN.md must start with a link "English: [README.md](README.md)"'


def test_every_command_of_the_chinese_handout_is_one_the_english_readme_gives():
    chinese = _chinese_commands()
    assert len(chinese) >= 20, 'found only {} commands: is the fence parsing broken?'.format(
        len(chinese))
    english = _english_commands()
    missing = [line for line, tokens in chinese if tokens not in english]
    assert not missing, (
        'README.zh-CN.md runs commands that README.md does not give (same script, flags and '
        'values; only the comments may differ). Change README.md first, then both:\n  '
        + '\n  '.join(missing))


def test_every_picture_of_the_chinese_handout_exists_and_is_one_the_english_readme_shows():
    chinese = _pictures(_read('README.zh-CN.md'))
    assert chinese, 'README.zh-CN.md shows no pictures'
    english = set(_pictures(_read('README.md')))
    missing = [p for p in chinese if not os.path.isfile(os.path.join(REPO, p))]
    assert not missing, 'pictures that do not exist: {}'.format(missing)
    not_english = [p for p in chinese if p not in english]
    assert not not_english, 'pictures README.md does not show: {}'.format(not_english)


def test_output_blocks_of_the_chinese_handout_are_the_english_ones_verbatim():
    english = {body for _, body in _code_blocks(_read('README.md'))}
    outputs = [body for info, body in _code_blocks(_read('README.zh-CN.md'))
               if info not in SHELL_INFO]
    assert any('total  8 weighted' in body for body in outputs), \
        'README.zh-CN.md should show the per-layer table'
    changed = [body.splitlines()[0] for body in outputs if body not in english]
    assert not changed, 'output blocks that differ from README.md (first lines): {}'.format(
        changed)


@pytest.mark.parametrize('name', ['README.md', 'README.zh-CN.md'])
def test_every_command_of_the_readmes_parses_with_its_script(name, capsys):
    commands = _project_commands(name, inline=True)
    assert len(commands) >= 20, 'found only {} commands in {}'.format(len(commands), name)
    failures = []
    for line, tokens in commands:
        for script, args in _script_calls(tokens):
            assert os.path.isfile(os.path.join(REPO, script)), \
                '{}: no such script in the project'.format(line)
            if '--help' in args or '-h' in args:
                continue
            module = _load(script)
            try:
                module.parse_args(args)
            except SystemExit as e:
                failures.append('{}\n    {}'.format(
                    line, capsys.readouterr().err.strip() or 'exit status {}'.format(e.code)))
    assert not failures, 'commands their scripts refuse:\n  ' + '\n  '.join(failures)
