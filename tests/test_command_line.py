"""command_line.py: one-line errors, exit statuses, and hints that run as printed."""
import os
import subprocess
import sys

import pytest

import command_line

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_argument_errors_are_one_line_with_status_2(capsys):
    parser = command_line.ArgumentParser(prog='tool.py')
    parser.add_argument('--count', type=command_line.positive_int, default=1)
    for argv, message in ((['--count', '0'], 'must be at least 1, not 0'),
                          (['--count', 'x'], "'x' is not a whole number"),
                          (['--colour'], 'unrecognized arguments: --colour')):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2
        assert err.startswith('error: ') and message in err and err.count('\n') == 1
        assert err.rstrip().endswith('(see tool.py --help)')


def test_run_main_turns_failures_into_statuses(capsys):
    class Oops(ValueError):
        pass

    def fails():
        raise Oops('the file is\nbroken')

    def interrupted():
        raise KeyboardInterrupt

    assert command_line.run_main(lambda: None) == 0
    assert command_line.run_main(lambda: 1) == 1
    assert command_line.run_main(fails, errors=(Oops,)) == 2
    assert capsys.readouterr().err == 'error: the file is broken\n'
    assert command_line.run_main(interrupted) == 130

    def out_of_memory():
        raise MemoryError

    capsys.readouterr()
    assert command_line.run_main(out_of_memory) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: out of memory: ') and err.count('\n') == 1
    with pytest.raises(ZeroDivisionError):          # a bug is not dressed up as bad input
        command_line.run_main(lambda: 1 / 0, errors=(Oops,))


def test_one_line_of_a_long_message():
    assert command_line.one_line(ValueError('\n  first line\nsecond\n')) == 'first line'
    assert command_line.one_line(ValueError('')) == 'ValueError'


def test_printed_hints_run_as_printed_without_an_activated_environment(tmp_path, monkeypatch):
    """The hint names this interpreter, so a plain shell (no venv on PATH) can run it
    (the hint is made under that shell's PATH, as when the venv is not activated)."""
    monkeypatch.setenv('PATH', '/usr/bin:/bin')
    hint = command_line.python_command('alexnet.py', '--num-classes', '3')
    assert hint.endswith('alexnet.py --num-classes 3')
    env = {'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path), 'TF_CPP_MIN_LOG_LEVEL': '3'}
    result = subprocess.run(hint, shell=True, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert 'AlexNet (bvlc_alexnet), 3 classes' in result.stdout


def test_tensorboard_hint_names_the_installed_tensorboard(tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', '/usr/bin:/bin')      # as when the venv is not activated
    hint = command_line.tensorboard_command('logs dir')
    assert hint.endswith("--logdir 'logs dir'")
    program = hint[:-len(" --logdir 'logs dir'")]
    env = {'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path)}
    result = subprocess.run(program + ' --version_tb', shell=True, cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip().splitlines()[-1][0].isdigit()   # its version, e.g. 2.21.0


def test_python_names_the_interpreter_short_when_the_path_finds_it(tmp_path, monkeypatch):
    python = tmp_path / 'env' / 'bin' / 'python'
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\n')
    python.chmod(0o755)
    monkeypatch.setattr(sys, 'executable', str(python))
    monkeypatch.chdir(str(tmp_path))
    monkeypatch.setenv('PATH', '/usr/bin:/bin')
    assert command_line.python_command('x.py', 'a b') == "env/bin/python x.py 'a b'"
    monkeypatch.setenv('PATH', str(python.parent) + ':/usr/bin')    # an activated environment
    assert command_line.python_command('x.py') == 'python x.py'
