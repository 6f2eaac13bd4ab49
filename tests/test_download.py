"""Tests for download.py against local HTTP servers on 127.0.0.1 (never the internet).

Each server is a ThreadingHTTPServer on a random port serving one payload with
an ETag, in this process; its `mode` adds the faults a real download meets (a
server that ignores Range or If-Range, a connection dropped mid-file, a 404),
and `respond` lets a test answer by hand, byte by byte, as a broken or hostile
server would. The worst cases (a flood without a length, a zip bomb) run the real script
in a subprocess whose memory and file size are capped by setrlimit.
"""
import errno
import hashlib
import http.server
import io
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import threading
import zipfile
import zlib

import numpy as np
import pytest

import download
import weight_files
import weight_formats
from conftest import write_py2_weights_npy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny stand-in for bvlc_alexnet's layer shapes, so fixtures stay a few KB.
TINY_SHAPES = weight_formats.tiny_shapes(10)   # all of AlexNet's layers, a few values each
ETAG = '"v1"'
LAST_MODIFIED = 'Tue, 15 Nov 1994 08:12:31 GMT'


class _State(object):
    def __init__(self, payload, mode, etag, last_modified, respond):
        self.payload = payload
        self.mode = mode
        self.etag = etag
        self.last_modified = last_modified
        self.respond = respond    # respond(handler, state) answers instead, if given
        self.requests = []        # the headers of each request, in order
        self.paths = []
        self.sent = 0             # body bytes sent in all
        self.release = threading.Event()   # set at teardown: frees a handler that stalls


def _handler(state):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            state.requests.append(dict(self.headers))
            state.paths.append(self.path)
            if state.respond is not None:
                try:
                    state.respond(self, state)
                except (ConnectionError, socket.timeout):
                    pass                           # the client gave up, as it should
                return
            payload = state.payload
            if state.mode == '404':
                self.send_error(404, 'Not Found')
                return
            if state.mode == 'drop-once' and len(state.requests) == 1:
                # Promise the whole file, send half, hang up.
                self._send(200, payload, len(payload), stop_at=len(payload) // 2)
                self.close_connection = True
                return
            wanted = self.headers.get('Range')
            if_range = self.headers.get('If-Range')
            # If-Range: the rest only if the client holds this version, else all of it.
            same = (if_range is None or state.mode == 'ignore-if-range'
                    or if_range in (state.etag, state.last_modified))
            if wanted and same and state.mode != 'ignore-range':
                start = int(wanted[len('bytes='):].rstrip('-'))
                if start >= len(payload):
                    self.send_response(416)
                    self.send_header('Content-Range', 'bytes */%d' % len(payload))
                    self.send_header('Content-Length', '0')
                    self.end_headers()
                    return
                self._send(206, payload[start:], len(payload) - start,
                           content_range='bytes %d-%d/%d' % (start, len(payload) - 1,
                                                             len(payload)))
                return
            self._send(200, payload, len(payload))

        def _send(self, code, body, length, content_range=None, stop_at=None):
            self.send_response(code)
            self.send_header('Content-Length', str(length))
            if content_range:
                self.send_header('Content-Range', content_range)
            if state.etag:
                self.send_header('ETag', state.etag)
            if state.last_modified:
                self.send_header('Last-Modified', state.last_modified)
            self.end_headers()
            body = body[:stop_at] if stop_at is not None else body
            state.sent += len(body)     # counted first: the client may finish before write returns
            self.wfile.write(body)
            self.wfile.flush()

        def log_message(self, *args):
            pass
    return Handler


@pytest.fixture
def serve():
    """serve(payload, mode='range', ...) -> (url, state); servers stop after the test."""
    servers = []

    def start(payload=b'', mode='range', name='file.bin', etag=ETAG,
              last_modified=LAST_MODIFIED, respond=None):
        state = _State(payload, mode, etag, last_modified, respond)
        server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _handler(state))
        server.daemon_threads = True
        server.handle_error = lambda request, address: None   # a hung-up client is no news
        thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05})
        thread.daemon = True
        thread.start()
        servers.append((server, thread, state))
        return 'http://127.0.0.1:%d/%s' % (server.server_address[1], name), state

    yield start
    for server, thread, state in servers:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _payload(size=3 * 1024 * 1024 + 123, seed=0):
    return np.random.RandomState(seed).bytes(size)


def _read(path):
    with open(str(path), 'rb') as f:
        return f.read()


def _begun(dest, url, data, etag=ETAG, last_modified=LAST_MODIFIED, total=None):
    """Leaves `dest`.part and its record as an interrupted run would have."""
    with open(str(dest) + '.part', 'wb') as f:
        f.write(data)
    with open(str(dest) + '.part.json', 'w') as f:
        json.dump({'url': url, 'etag': etag, 'last_modified': last_modified,
                   'total': total}, f)


def _run(argv, capsys):
    """Runs download.main(argv); returns (exit status, stdout, stderr)."""
    code = download.main(argv)
    out, err = capsys.readouterr()
    assert 'Traceback' not in err
    return code, out, err


def _error_of(argv, capsys):
    """Runs download.main(argv), which must fail with status 2 and one line; returns it."""
    code, _, err = _run(argv, capsys)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    return lines[0]


# --- fetch: resume only the same file -------------------------------------------

MAX = 100 * 1024 * 1024     # max_bytes for fetch() where the bound is not the point


def test_fetch_writes_the_file_and_no_part(serve, tmp_path):
    payload = _payload()
    url, state = serve(payload)
    dest = tmp_path / 'sub' / 'file.bin'
    download.fetch(url, str(dest), MAX, progress=False)
    assert _read(dest) == payload
    assert os.listdir(str(tmp_path / 'sub')) == ['file.bin']     # no .part, no record
    assert 'Range' not in state.requests[0] and 'If-Range' not in state.requests[0]


def test_resume_asks_for_the_rest_of_the_same_file(serve, tmp_path):
    payload = _payload()
    url, state = serve(payload)
    dest = tmp_path / 'file.bin'
    _begun(dest, url, payload[:1000], total=len(payload))
    download.fetch(url, str(dest), MAX, progress=False)
    assert _read(dest) == payload
    assert state.requests[0]['Range'] == 'bytes=1000-'
    assert state.requests[0]['If-Range'] == ETAG          # "only if it is still this file"
    assert state.sent == len(payload) - 1000             # only the rest came over the wire


def test_resume_proves_the_file_by_date_when_the_etag_is_weak(serve, tmp_path):
    payload = _payload()
    url, state = serve(payload, etag='W/"v1"')
    dest = tmp_path / 'file.bin'
    _begun(dest, url, payload[:1000], etag='W/"v1"')
    download.fetch(url, str(dest), MAX, progress=False)
    assert _read(dest) == payload
    assert state.requests[0]['If-Range'] == LAST_MODIFIED   # a weak ETag may not be used


def test_a_file_changed_on_the_server_starts_over(serve, tmp_path, capsys):
    old, new = _payload(seed=1), _payload(seed=2)
    url, state = serve(new, etag='"v2"')
    dest = tmp_path / 'file.bin'
    _begun(dest, url, old[:1000], etag='"v1"')
    download.fetch(url, str(dest), MAX, progress=False)
    assert _read(dest) == new                      # not old[:1000] + new[1000:]
    assert state.requests[0]['If-Range'] == '"v1"'
    assert len(state.requests) == 1                # the 200 answer itself was the new file
    assert 'sent the whole file (HTTP 200)' in capsys.readouterr().err


def test_a_changed_file_is_noticed_even_if_the_server_ignores_if_range(serve, tmp_path,
                                                                       capsys):
    old, new = _payload(seed=1), _payload(seed=2)
    url, state = serve(new, mode='ignore-if-range', etag='"v2"')
    dest = tmp_path / 'file.bin'
    _begun(dest, url, old[:1000], etag='"v1"')
    download.fetch(url, str(dest), MAX, progress=False)
    assert _read(dest) == new                      # its 206 said ETag "v2": not our file
    assert 'does not continue' in capsys.readouterr().err
    assert 'Range' not in state.requests[1]


@pytest.mark.parametrize('record', ['missing', 'another url', 'unreadable', 'no validator'])
def test_a_part_that_cannot_be_proven_starts_over(serve, tmp_path, capsys, record):
    """The hostile tester's splice: a .part of one file resumed against another URL."""
    other = _payload(seed=1)
    payload = _payload(seed=2)
    url, state = serve(payload)
    dest = tmp_path / 'file.bin'
    _begun(dest, url.replace('file.bin', 'other.bin') if record == 'another url' else url,
           other[:1000], etag=None if record == 'no validator' else ETAG,
           last_modified=None if record == 'no validator' else LAST_MODIFIED)
    record_path = tmp_path / 'file.bin.part.json'
    if record == 'missing':
        record_path.unlink()
    elif record == 'unreadable':
        record_path.write_text('{"url": ')
    download.fetch(url, str(dest), MAX, progress=False)
    assert _read(dest) == payload
    assert 'Range' not in state.requests[0]
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and 'cannot resume' in err and 'starting over' in err
    assert {'missing': 'no record', 'unreadable': 'no record', 'another url': 'other.bin',
            'no validator': 'no ETag or Last-Modified'}[record] in err


def test_server_ignoring_range_restarts_from_zero(serve, tmp_path, capsys):
    payload = _payload()
    url, state = serve(payload, mode='ignore-range')
    dest = tmp_path / 'file.bin'
    _begun(dest, url, payload[:1000])
    download.fetch(url, str(dest), MAX, progress=False)
    assert _read(dest) == payload                   # not 1000 bytes too long
    assert 'sent the whole file (HTTP 200)' in capsys.readouterr().err
    assert state.requests[0]['Range'] == 'bytes=1000-'


def _partial(claim):
    """A server whose 206 answers are claim(payload, start) -> (Content-Range, body),
    with a Content-Length that fits the body; other requests get the whole file."""
    def respond(handler, state):
        if 'Range' not in handler.headers:
            handler.send_response(200)
            handler.send_header('Content-Length', str(len(state.payload)))
            handler.send_header('ETag', ETAG)
            handler.end_headers()
            handler.wfile.write(state.payload)
            return
        start = int(handler.headers['Range'][len('bytes='):].rstrip('-'))
        content_range, body = claim(state.payload, start)
        handler.send_response(206)
        handler.send_header('Content-Range', content_range)
        handler.send_header('Content-Length', str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return respond


@pytest.mark.parametrize('claim', [
    lambda p, s: ('bytes %d-%d/%d' % (s, len(p) - 1, len(p) + 1000), p[s:]),
    lambda p, s: ('bytes 0-%d/%d' % (len(p) - s - 1, len(p)), p[:len(p) - s]),
    lambda p, s: ('bytes=%d-' % s, p[s:]),
    lambda p, s: ('', p[s:]),
], ids=['another total than recorded', 'not where the part ends', 'garbage', 'empty'])
def test_a_partial_answer_that_does_not_continue_the_part_starts_over(
        serve, tmp_path, capsys, claim):
    payload = _payload()
    url, state = serve(payload, respond=_partial(claim))
    dest = tmp_path / 'file.bin'
    _begun(dest, url, payload[:1000], total=len(payload))
    download.fetch(url, str(dest), MAX, progress=False)
    assert _read(dest) == payload
    assert [('Range' in request) for request in state.requests] == [True, False]
    assert 'does not continue' in capsys.readouterr().err


def test_dropped_connection_is_resumed_with_range(serve, tmp_path, capsys):
    payload = _payload()
    url, state = serve(payload, mode='drop-once')
    dest = tmp_path / 'file.bin'
    download.fetch(url, str(dest), MAX, progress=False)
    assert _read(dest) == payload
    assert len(state.requests) == 2
    assert 'Range' not in state.requests[0]
    assert state.requests[1]['Range'] == 'bytes=%d-' % (len(payload) // 2)
    assert state.requests[1]['If-Range'] == ETAG
    assert 'resuming (attempt 2 of 3)' in capsys.readouterr().err


def test_dropped_connection_keeps_the_part_and_its_record(serve, tmp_path):
    payload = _payload()
    url, state = serve(payload, mode='drop-once')
    dest = tmp_path / 'file.bin'
    with pytest.raises(download.DownloadError, match='run the same command again to resume'):
        download.fetch(url, str(dest), MAX, progress=False, attempts=1)
    assert not dest.exists()
    assert _read(str(dest) + '.part') == payload[:len(payload) // 2]
    with open(str(dest) + '.part.json') as f:
        assert json.load(f) == {'url': url, 'etag': ETAG, 'last_modified': LAST_MODIFIED,
                                'total': len(payload)}
    download.fetch(url, str(dest), MAX, progress=False)    # "run it again"
    assert _read(dest) == payload
    assert state.requests[1]['Range'] == 'bytes=%d-' % (len(payload) // 2)
    assert not os.path.exists(str(dest) + '.part.json')


def test_without_a_validator_a_dropped_connection_starts_over(serve, tmp_path, capsys):
    payload = _payload()
    url, state = serve(payload, mode='drop-once', etag=None, last_modified=None)
    dest = tmp_path / 'file.bin'
    download.fetch(url, str(dest), MAX, progress=False)
    assert _read(dest) == payload
    assert 'Range' not in state.requests[1]       # nothing proves it is the same file
    assert 'no ETag or Last-Modified' in capsys.readouterr().err


def test_complete_part_needs_no_more_bytes(serve, tmp_path):
    payload = _payload(5000)
    url, state = serve(payload)
    dest = tmp_path / 'file.bin'
    _begun(dest, url, payload, total=len(payload))     # the server answers 416
    download.fetch(url, str(dest), MAX, progress=False)
    assert _read(dest) == payload
    assert state.sent == 0


def test_a_part_longer_than_the_file_starts_over(serve, tmp_path, capsys):
    payload = _payload(5000)
    url, state = serve(payload)
    dest = tmp_path / 'file.bin'
    _begun(dest, url, payload + b'junk')               # 416 says the file has 5000 bytes
    download.fetch(url, str(dest), MAX, progress=False)
    assert _read(dest) == payload
    assert 'starting over' in capsys.readouterr().err


def test_ctrl_c_exits_130_and_the_next_run_resumes(serve, tmp_path, tiny_shapes, capsys,
                                                   monkeypatch):
    payload = _weights_bytes(tmp_path, TINY_SHAPES)
    url, state = serve(payload, name='bvlc_alexnet.npy')
    dest, source = tmp_path / 'bvlc_alexnet.npz', tmp_path / 'bvlc_alexnet.npy'
    argv = ['weights', '--url', url, '--dest', str(dest), '--no-progress']
    monkeypatch.setattr(download, 'CHUNK_SIZE', 100)
    real_tqdm = download.tqdm

    def interrupted(*args, **kwargs):
        bar = real_tqdm(*args, **kwargs)

        def update(n):
            raise KeyboardInterrupt     # Ctrl-C right after the first chunk was written
        bar.update = update
        return bar
    monkeypatch.setattr(download, 'tqdm', interrupted)
    code, _, err = _run(argv, capsys)
    assert code == 130
    assert 'run the same command again to resume' in err
    assert _read(str(source) + '.part') == payload[:100]
    assert not dest.exists() and not source.exists()

    monkeypatch.setattr(download, 'tqdm', real_tqdm)
    code, out, _ = _run(argv, capsys)
    assert code == 0 and 'every layer checked' in out
    assert _read(source) == payload and dest.exists()
    assert state.requests[1]['Range'] == 'bytes=100-'


# --- bounded bodies ----------------------------------------------------------------

def _flood(length=None, chunked=False, status=200, content_range=None, size=32 << 20):
    """A server that sends `size` bytes of zeros, whatever it announced: far past the
    bounds tested, yet finite, so that a broken bound fails the test, not fills the disk."""
    def respond(handler, state):
        handler.wfile.write(b'HTTP/1.1 %d Whatever\r\nETag: "v1"\r\n' % status)
        if length is not None:
            handler.wfile.write(b'Content-Length: %d\r\n' % length)
        if content_range is not None:
            handler.wfile.write(b'Content-Range: %s\r\n' % content_range.encode())
        if chunked:
            handler.wfile.write(b'Transfer-Encoding: chunked\r\n')
        handler.wfile.write(b'Connection: close\r\n\r\n')
        block = bytes(64 * 1024)
        while state.sent < size and not state.release.is_set():
            state.sent += len(block)
            handler.wfile.write(b'%x\r\n%s\r\n' % (len(block), block) if chunked else block)
    return respond


def test_a_body_without_length_stops_at_max_bytes(serve, tmp_path):
    url, state = serve(respond=_flood())
    dest = tmp_path / 'file.bin'
    with pytest.raises(download.DownloadError, match='more than 1.0 MB without announcing a '
                                                     'length') as error:
        download.fetch(url, str(dest), 10 ** 6, progress=False)
    assert 'check the address' in str(error.value)
    assert os.listdir(str(tmp_path)) == []               # the part was deleted


def test_a_chunked_body_running_past_its_content_length_is_stopped(serve, tmp_path):
    url, _ = serve(respond=_flood(length=1000, chunked=True))
    with pytest.raises(download.DownloadError, match='sent more than the 1000 bytes it '
                                                     'announced'):
        download.fetch(url, str(tmp_path / 'file.bin'), MAX, progress=False)
    assert os.listdir(str(tmp_path)) == []


def test_a_resumed_body_running_past_the_recorded_total_is_stopped(serve, tmp_path):
    url, _ = serve(respond=_flood(chunked=True, status=206,
                                    content_range='bytes 1000-4999/5000'))
    dest = tmp_path / 'file.bin'
    _begun(dest, url, bytes(1000), total=5000)
    with pytest.raises(download.DownloadError, match='sent more than the 5000 bytes'):
        download.fetch(url, str(dest), MAX, progress=False)
    assert os.listdir(str(tmp_path)) == []


def test_a_file_announced_larger_than_max_bytes_is_refused_up_front(serve, tmp_path):
    url, state = serve(_payload(5000))
    with pytest.raises(download.DownloadError, match=r'is 5000 bytes, more than the 4999 '):
        download.fetch(url, str(tmp_path / 'file.bin'), 4999, progress=False)
    assert os.listdir(str(tmp_path)) == []
    download.fetch(url, str(tmp_path / 'file.bin'), 5000, progress=False)   # just fits


def test_each_target_has_its_bound():
    assert download.TARGETS['weights'].max_bytes == 300 * 10 ** 6     # file: 244 MB
    assert download.TARGETS['petimages'].max_bytes == 1000 * 10 ** 6  # zip: 825 MB


def _raw(head, body=b''):
    """A server that answers with these exact bytes."""
    def respond(handler, state):
        handler.wfile.write(head + body)
    return respond


@pytest.mark.parametrize('head, says', [
    (b'HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n', "broken Content-Length ('abc')"),
    (b'HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n', "broken Content-Length ('-5')"),
    (b'HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n', "broken Content-Length ('1e3')"),
    (b'HELLO\r\n\r\n', 'did not answer in HTTP'),
    (b'HTTP/1.1 200 OK\r\n' + b'X-A: b\r\n' * 101 + b'\r\n', 'did not answer in HTTP'),
    (b'HTTP/1.1 200 OK\r\nX-A: ' + b'b' * 70000 + b'\r\n\r\n', 'did not answer in HTTP'),
    (b'HTTP/1.1 206 Partial Content\r\nContent-Length: 3\r\n\r\n', 'answered HTTP 206'),
    (b'HTTP/1.1 204 No Content\r\n\r\n', 'answered HTTP 204'),
    (b'HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\n\r\n', 'HTTP 416'),
], ids=['length abc', 'length -5', 'length 1e3', 'status line', '101 headers',
        'long header', '206 unasked', '204', '416 unasked'])
def test_a_malformed_answer_is_one_line(serve, tmp_path, capsys, head, says):
    url, _ = serve(respond=_raw(head, b'x' * 100))
    message = _error_of(['weights', '--url', url, '--dest', str(tmp_path / 'w.npy'),
                         '--no-progress'], capsys)
    assert says in message
    assert os.listdir(str(tmp_path)) == []


def _redirect(to):
    def respond(handler, state):
        handler.send_response(302)
        handler.send_header('Location', to(len(state.requests)))
        handler.send_header('Content-Length', '0')
        handler.end_headers()
    return respond


@pytest.mark.parametrize('to, says', [
    (lambda n: '/file.bin', 'redirects in a loop, more than 10 times'),
    (lambda n: '/hop%d' % n, 'redirects in a loop, more than 10 times'),
    (lambda n: 'ftp://127.0.0.1/etc/passwd', "redirects to 'ftp://127.0.0.1/etc/passwd', "
                                             "not an http(s) address"),
    (lambda n: 'file:///etc/passwd', 'or to an address that is not http(s) (HTTP 302)'),
], ids=['loop', 'too many', 'to ftp', 'to file'])
def test_a_bad_redirect_is_one_line(serve, tmp_path, capsys, to, says):
    url, state = serve(respond=_redirect(to))
    message = _error_of(['weights', '--url', url, '--dest', str(tmp_path / 'w.npy'),
                         '--no-progress'], capsys)
    assert says in message
    assert len(state.requests) <= 11


def test_a_good_redirect_is_followed_with_its_range(serve, tmp_path):
    payload = _payload()
    target, state = serve(payload)
    url, _ = serve(respond=_redirect(lambda n: target))
    dest = tmp_path / 'file.bin'
    _begun(dest, url, payload[:1000])
    download.fetch(url, str(dest), MAX, progress=False)
    assert _read(dest) == payload
    assert state.requests[0]['Range'] == 'bytes=1000-'
    assert state.requests[0]['If-Range'] == ETAG


def test_a_server_that_never_answers_is_one_line(serve, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(download, 'TIMEOUT', 0.3)
    url, _ = serve(respond=lambda handler, state: state.release.wait(30))
    message = _error_of(['weights', '--url', url, '--dest', str(tmp_path / 'w.npy'),
                         '--no-progress'], capsys)
    assert 'no answer for 0.3 s' in message and 'run the same command again' in message


def test_a_body_that_stalls_is_resumed_then_one_line(serve, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(download, 'TIMEOUT', 0.3)
    monkeypatch.setattr(download, 'CHUNK_SIZE', 1000)

    def stall(handler, state):
        """Sends the first 1000 of 5000 bytes, then nothing (nor any of the rest)."""
        if 'Range' in handler.headers:
            handler.send_response(206)
            handler.send_header('Content-Range', 'bytes 1000-4999/5000')
            handler.send_header('Content-Length', '4000')
        else:
            handler.send_response(200)
            handler.send_header('Content-Length', '5000')
        handler.send_header('ETag', ETAG)
        handler.end_headers()
        if 'Range' not in handler.headers:
            handler.wfile.write(b'x' * 1000)
        handler.wfile.flush()
        state.release.wait(30)
    url, state = serve(respond=stall)
    code, _, err = _run(['weights', '--url', url, '--dest', str(tmp_path / 'w.npy'),
                         '--no-progress'], capsys)
    assert code == 2
    lines = err.splitlines()
    assert lines[:2] == ['connection dropped (no answer for 0.3 s) after 1000 bytes; '
                         'resuming (attempt %d of 3)' % n for n in (2, 3)]
    assert lines[2].startswith('error: the connection dropped (no answer for 0.3 s)')
    assert 'run the same command again to resume' in lines[2] and len(lines) == 3


@pytest.mark.parametrize('url', ['notaurl', 'ftp://127.0.0.1/bvlc_alexnet.npy',
                                 'file:///etc/passwd', 'http://[::1', 'http://',
                                 'http://127.0.0.1:abc/x', 'http://127.0.0.1:1/a b'])
def test_a_bad_url_is_one_line(tmp_path, capsys, url):
    message = _error_of(['weights', '--url', url, '--dest', str(tmp_path / 'w.npy'),
                         '--no-progress'], capsys)
    assert '--url' in message
    assert os.listdir(str(tmp_path)) == []


def test_tls_to_a_plain_http_server_is_one_line(serve, tmp_path, capsys):
    url, _ = serve(b'plain')
    message = _error_of(['weights', '--url', url.replace('http:', 'https:'),
                         '--dest', str(tmp_path / 'w.npy'), '--no-progress'], capsys)
    assert 'cannot reach 127.0.0.1' in message and 'SSL' in message


def test_http_404_is_one_clear_line(serve, tmp_path, capsys):
    url, _ = serve(b'', mode='404')
    message = _error_of(['weights', '--url', url, '--dest', str(tmp_path / 'w.npy'),
                         '--no-progress'], capsys)
    assert 'HTTP 404' in message and url in message
    assert os.listdir(str(tmp_path)) == []


def test_no_network_is_one_clear_line(tmp_path, capsys):
    with socket.socket() as probe:                  # a port nobody listens on
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    url = 'http://127.0.0.1:%d/bvlc_alexnet.npy' % port
    message = _error_of(['weights', '--url', url, '--dest', str(tmp_path / 'w.npy'),
                         '--no-progress'], capsys)
    assert 'cannot reach 127.0.0.1:%d' % port in message
    assert 'internet connection' in message


class _FullDisk(object):
    """A file whose disk fills up after `room` bytes."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            self.f.write(data[:self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, 'No space left on device')
        self.room -= len(data)
        return self.f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_full_disk_keeps_the_part_and_resumes(serve, tmp_path, monkeypatch):
    payload = _payload()
    url, state = serve(payload)
    dest = tmp_path / 'file.bin'
    room = 1500 * 1024

    def full_disk_open(path, mode='r', *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        return _FullDisk(f, room) if 'b' in mode else f      # the record is text

    monkeypatch.setattr(download, 'open', full_disk_open, raising=False)
    with pytest.raises(download.DownloadError, match='disk is full') as error:
        download.fetch(url, str(dest), MAX, progress=False)
    assert 'free some space' in str(error.value)
    assert _read(str(dest) + '.part') == payload[:room]     # a correct prefix, kept
    assert not dest.exists()

    monkeypatch.undo()
    download.fetch(url, str(dest), MAX, progress=False)
    assert _read(dest) == payload
    assert state.requests[-1]['Range'] == 'bytes=%d-' % room


def test_too_little_free_space_is_said_before_downloading(serve, tmp_path, monkeypatch):
    url, _ = serve(_payload())
    usage = download.shutil.disk_usage(str(tmp_path))
    monkeypatch.setattr(download.shutil, 'disk_usage',
                        lambda path: usage._replace(free=1000))
    with pytest.raises(download.DownloadError, match='not enough disk space'):
        download.fetch(url, str(tmp_path / 'file.bin'), MAX, progress=False)
    assert os.listdir(str(tmp_path)) == []            # not even a .part was started


# --- weights: verified before they get their name ------------------------------

@pytest.fixture
def tiny_shapes(monkeypatch):
    monkeypatch.setattr(download, 'expected_shapes', lambda: TINY_SHAPES)


def _weights_bytes(tmp_path, shapes):
    rng = np.random.RandomState(1)
    layers = {name: (rng.standard_normal(w).astype(np.float32),
                     rng.standard_normal(b).astype(np.float32))
              for name, (w, b) in shapes.items()}
    path = tmp_path / 'fixture.npy'
    write_py2_weights_npy(str(path), layers)
    data = _read(path)
    path.unlink()
    return data


def test_weights_download_is_verified_and_saved(serve, tmp_path, tiny_shapes, capsys):
    payload = _weights_bytes(tmp_path, TINY_SHAPES)
    url, _ = serve(payload, name='bvlc_alexnet.npy')
    dest = tmp_path / 'weights' / 'bvlc_alexnet.npz'
    argv = ['weights', '--url', url, '--dest', str(dest), '--no-progress']
    code, out, _ = _run(argv, capsys)
    assert code == 0 and 'every layer checked' in out
    assert _read(tmp_path / 'weights' / 'bvlc_alexnet.npy') == payload   # kept beside it
    got = weight_files.load_weights(str(dest), expected=TINY_SHAPES)
    want = weight_files.load_weights(str(tmp_path / 'weights' / 'bvlc_alexnet.npy'),
                                     expected=TINY_SHAPES)
    for layer in want:
        for part in (0, 1):
            np.testing.assert_array_equal(got[layer][part], want[layer][part])
    code, out, _ = _run(argv, capsys)
    assert code == 0 and 'already there' in out


@pytest.mark.parametrize('fault', ['truncated', 'wrong shape', 'html'])
def test_bad_weights_never_get_the_final_name(serve, tmp_path, tiny_shapes, capsys, fault):
    if fault == 'truncated':
        payload = _weights_bytes(tmp_path, TINY_SHAPES)[:-100]
    elif fault == 'html':
        payload = b'<html>an error page, served as 200 OK</html>'
    else:
        payload = _weights_bytes(tmp_path, weight_formats.tiny_shapes(2))
    url, _ = serve(payload, name='bvlc_alexnet.npy')
    dest = tmp_path / 'bvlc_alexnet.npz'
    message = _error_of(['weights', '--url', url, '--dest', str(dest), '--no-progress'],
                        capsys)
    assert 'failed its check' in message
    assert {'wrong shape': 'fc8/weights has shape (3, 2), the model expects (3, 10)',
            'truncated': 'truncated or corrupt',
            'html': 'neither a .npy, a .npz nor a .caffemodel'}[fault] in message
    assert os.listdir(str(tmp_path)) == []        # neither the file nor a .part nor a record


# --- The canonical weights: the BVLC caffemodel from its mirrors, SHA-1 first ------------

@pytest.fixture
def caffe_shapes(monkeypatch):
    """Tiny layer shapes a caffemodel can hold (pool5 of 2x2x2 for fc6)."""
    import caffe_files
    shapes = caffe_files.tiny_shapes(3)
    monkeypatch.setattr(download, 'expected_shapes', lambda: shapes)
    return shapes


def _caffemodel(tmp_path, seed, name='m.caffemodel'):
    """(bytes of a tiny caffemodel, its layers in this project's layout, its SHA-1)."""
    import caffe_files
    layers = caffe_files.tiny_layers(seed)
    path = tmp_path / name
    caffe_files.write_caffemodel(str(path), layers, layout='layers', legacy=True)
    data = _read(path)
    path.unlink()
    return data, layers, hashlib.sha1(data).hexdigest()


def _sources(urls, sha1, npy_url=None):
    sources = [download.Source(url, 'bvlc_alexnet.caffemodel', sha1, MAX) for url in urls]
    if npy_url:
        sources.append(download.Source(npy_url, 'bvlc_alexnet.npy', None, MAX))
    return sources


def _same_layers(path, layers, shapes):
    got = weight_files.load_weights(str(path), expected=shapes)
    for layer in layers:
        for part in (0, 1):
            np.testing.assert_array_equal(got[layer][part], layers[layer][part], layer)


def test_the_caffemodel_comes_from_the_first_mirror_that_answers(serve, tmp_path, caffe_shapes,
                                                                  monkeypatch, capsys):
    data, layers, sha1 = _caffemodel(tmp_path, 1)
    dead, _ = serve(respond=lambda handler, state: handler.send_error(404))
    url, _ = serve(data, name='bvlc_alexnet.caffemodel')
    monkeypatch.setattr(download, 'WEIGHT_SOURCES', _sources([dead, url], sha1))
    monkeypatch.setattr(download, 'MEAN_SOURCE', None)
    dest = tmp_path / 'weights' / 'bvlc_alexnet.npz'
    code, out, err = _run(['weights', '--dest', str(dest), '--no-progress'], capsys)
    assert code == 0, err
    assert 'could not get %s (%s answered HTTP 404' % (dead, dead) in err
    assert 'from %s, SHA-1 checked, every layer checked' % url in out
    _same_layers(dest, layers, caffe_shapes)                      # converted to our layout
    assert _read(tmp_path / 'weights' / 'bvlc_alexnet.caffemodel') == data


def test_a_caffemodel_with_another_sha1_is_never_read(serve, tmp_path, caffe_shapes,
                                                      monkeypatch, capsys):
    data, layers, sha1 = _caffemodel(tmp_path, 1)
    other, _, _ = _caffemodel(tmp_path, 2)                        # a valid file, not this one
    wrong, _ = serve(other, name='bvlc_alexnet.caffemodel')
    right, _ = serve(data, name='bvlc_alexnet.caffemodel')
    read = []
    real = download.caffemodel.read_caffemodel
    monkeypatch.setattr(download.caffemodel, 'read_caffemodel',
                        lambda path, expected: read.append(_read(path)) or real(path, expected))
    dest = tmp_path / 'bvlc_alexnet.npz'
    download.download_weights(str(dest), _sources([wrong, right], sha1), mean=None,
                              progress=False)
    err = capsys.readouterr().err
    assert 'its SHA-1 is %s, not %s' % (hashlib.sha1(other).hexdigest(), sha1) in err
    assert other not in read and data in read                     # checked before it is parsed
    _same_layers(dest, layers, caffe_shapes)


def test_without_a_caffemodel_the_npy_is_taken(serve, tmp_path, caffe_shapes, capsys):
    import caffe_files
    layers = caffe_files.tiny_layers(4)
    write_py2_weights_npy(str(tmp_path / 'x.npy'), layers)
    npy = _read(tmp_path / 'x.npy')
    (tmp_path / 'x.npy').unlink()
    dead, _ = serve(respond=lambda handler, state: handler.send_error(503))
    url, _ = serve(npy, name='bvlc_alexnet.npy')
    folder = tmp_path / 'weights'
    download.download_weights(str(folder / 'bvlc_alexnet.npz'),
                              _sources([dead, dead], 'x' * 40, npy_url=url), mean=None,
                              progress=False)
    _same_layers(folder / 'bvlc_alexnet.npz', layers, caffe_shapes)
    assert sorted(os.listdir(str(folder))) == ['bvlc_alexnet.npy', 'bvlc_alexnet.npz']


def test_no_source_is_one_line_naming_each(serve, tmp_path, caffe_shapes, monkeypatch, capsys):
    dead, _ = serve(respond=lambda handler, state: handler.send_error(404))
    monkeypatch.setattr(download, 'WEIGHT_SOURCES', _sources([dead], 'x' * 40, npy_url=dead))
    code, _, err = _run(['weights', '--dest', str(tmp_path / 'w.npz'), '--no-progress'], capsys)
    notes, message = err.splitlines()           # one note while it goes on, one error at the end
    assert code == 2 and notes.startswith('could not get %s (' % dead)
    assert notes.endswith('; trying the next source')
    assert message.startswith('error: no source gave the weights (') and message.count('404') == 2
    assert os.listdir(str(tmp_path)) == []


def test_a_caffemodel_already_in_weights_needs_no_network(tmp_path, caffe_shapes, capsys):
    data, layers, sha1 = _caffemodel(tmp_path, 1)
    folder = tmp_path / 'weights'
    folder.mkdir()
    (folder / 'bvlc_alexnet.caffemodel').write_bytes(data)
    nowhere = 'http://127.0.0.1:9/bvlc_alexnet.caffemodel'      # nothing listens there
    download.download_weights(str(folder / 'bvlc_alexnet.npz'), _sources([nowhere], sha1),
                              mean=None, progress=False)
    assert 'converted' in capsys.readouterr().out
    _same_layers(folder / 'bvlc_alexnet.npz', layers, caffe_shapes)
    # A file of that name that is not the BVLC one is left alone, and said so.
    (folder / 'bvlc_alexnet.npz').unlink()
    with pytest.raises(download.DownloadError, match='is there but is not bvlc_alexnet '
                                                     r'\(its SHA-1 is'):
        download.download_weights(str(folder / 'bvlc_alexnet.npz'),
                                  _sources([nowhere], 'f' * 40), mean=None, progress=False)
    assert _read(folder / 'bvlc_alexnet.caffemodel') == data


def test_the_mean_image_comes_along_and_its_failure_is_a_warning(serve, tmp_path, caffe_shapes,
                                                                 capsys):
    import caffe_files
    data, _, sha1 = _caffemodel(tmp_path, 1)
    caffe_files.write_blobproto(str(tmp_path / 'mean'),
                                np.full((3, 256, 256), 110, np.float32))
    mean = _read(tmp_path / 'mean')
    (tmp_path / 'mean').unlink()
    url, _ = serve(data, name='bvlc_alexnet.caffemodel')
    mean_url, _ = serve(mean, name='imagenet_mean.binaryproto')
    folder = tmp_path / 'weights'
    good = download.Source(mean_url, 'imagenet_mean.binaryproto',
                           hashlib.sha1(mean).hexdigest(), MAX)
    download.download_weights(str(folder / 'bvlc_alexnet.npz'), _sources([url], sha1),
                              mean=good, progress=False)
    assert _read(folder / 'imagenet_mean.binaryproto') == mean
    (folder / 'imagenet_mean.binaryproto').unlink()
    (folder / 'bvlc_alexnet.npz').unlink()
    capsys.readouterr()
    download.download_weights(str(folder / 'bvlc_alexnet.npz'), _sources([url], sha1),
                              mean=good._replace(sha1='0' * 40), progress=False)
    err = capsys.readouterr().err
    assert err.startswith('warning: no mean image (') and err.count('\n') == 1
    assert not (folder / 'imagenet_mean.binaryproto').exists()
    assert (folder / 'bvlc_alexnet.npz').exists()


def test_the_published_checksums_and_mirrors():
    assert download.BVLC_ALEXNET_SHA1 == '9116a64c0fbe4459d18f4bb6b56d647b63920377'
    assert download.IMAGENET_MEAN_SHA1 == '63e4652e656abc1e87b7a8339a7e02fca63a2c0c'
    assert [s.url.split('/')[2] for s in download.WEIGHT_SOURCES] == [
        'dl.caffe.berkeleyvision.org', 'apache-mxnet.s3-accelerate.dualstack.amazonaws.com',
        'www.cs.toronto.edu']
    assert [s.sha1 for s in download.WEIGHT_SOURCES] == [download.BVLC_ALEXNET_SHA1] * 2 + [None]
    assert download.TARGETS['weights'].dest == 'weights/bvlc_alexnet.npz'


def test_expected_shapes_are_bvlc_alexnets():
    shapes = download.expected_shapes()
    assert shapes['conv1'] == ((11, 11, 3, 96), (96,))
    assert shapes['fc8'] == ((4096, 1000), (1000,))


# --- petimages: a zip checked against its bounds, then unpacked ------------------

def _zip_bytes(members, compression=zipfile.ZIP_DEFLATED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _one_member_zip(name, deflated, crc, size):
    """A zip written byte by byte, so that it can declare what zipfile would not write."""
    name = name.encode()
    local = struct.pack('<4s5H3L2H', b'PK\x03\x04', 20, 0, 8, 0, 33, crc, len(deflated),
                        size, len(name), 0) + name + deflated
    central = struct.pack('<4s6H3L5H2L', b'PK\x01\x02', 20, 20, 0, 8, 0, 33, crc,
                          len(deflated), size, len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack('<4s4H2LH', b'PK\x05\x06', 0, 0, 1, 1, len(central), len(local), 0)
    return local + central + end


def _deflated_zeros(mib):
    """A raw deflate stream of `mib` MiB of zeros, built fast: one compressed MiB
    repeated (a full flush makes each copy stand alone), then an empty last block."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = squeeze.compress(bytes(1 << 20)) + squeeze.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(bytes(1 << 20), crc)
    return block * mib + zlib.compressobj(9, zlib.DEFLATED, -15).flush(), crc


PET_MEMBERS = {
    'PetImages/Cat/0.jpg': b'cat photo bytes' * 50,
    'PetImages/Dog/0.jpg': b'dog photo bytes' * 50,
    'readme[1].txt': b'not part of the data set',
}
ZIP_NAME = 'kagglecatsanddogs_5340.zip'


def test_petimages_unpacks_to_data_petimages(serve, tmp_path, capsys):
    url, _ = serve(_zip_bytes(PET_MEMBERS), name=ZIP_NAME)
    data = tmp_path / 'data'
    argv = ['petimages', '--url', url, '--dest', str(data), '--no-progress']
    code, out, _ = _run(argv, capsys)
    assert code == 0 and 'unpacked to' in out
    assert _read(data / 'PetImages' / 'Cat' / '0.jpg') == PET_MEMBERS['PetImages/Cat/0.jpg']
    assert _read(data / 'PetImages' / 'Dog' / '0.jpg') == PET_MEMBERS['PetImages/Dog/0.jpg']
    assert sorted(os.listdir(str(data))) == ['PetImages']    # zip and readme gone

    code, out, _ = _run(argv, capsys)
    assert code == 0 and 'already there' in out


def test_zip_with_a_corrupt_member_fails_its_crc(serve, tmp_path, capsys):
    payload = bytearray(_zip_bytes(PET_MEMBERS, zipfile.ZIP_STORED))
    offset = bytes(payload).index(b'dog photo bytes')
    payload[offset] ^= 0xFF                            # one flipped byte in Dog/0.jpg
    url, _ = serve(bytes(payload), name=ZIP_NAME)
    data = tmp_path / 'data'
    message = _error_of(['petimages', '--url', url, '--dest', str(data), '--no-progress'],
                        capsys)
    assert 'PetImages/Dog/0.jpg is corrupt (Bad CRC-32' in message
    assert os.listdir(str(data)) == []                 # no zip, no .part, no PetImages


def test_not_a_zip_fails_its_check(serve, tmp_path, capsys):
    url, _ = serve(b'<html>a login page, not a zip</html>', name='pets.zip')
    message = _error_of(['petimages', '--url', url, '--dest', str(tmp_path),
                         '--no-progress'], capsys)
    assert 'not a readable zip' in message
    assert os.listdir(str(tmp_path)) == []


def _symlink_zip():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as archive:
        archive.writestr('PetImages/Cat/0.jpg', b'cat')
        link = zipfile.ZipInfo('PetImages/Dog/0.jpg')
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, '/etc/passwd')
    return buffer.getvalue()


@pytest.mark.parametrize('payload, says', [
    (_zip_bytes({'PetImages/Cat/0.jpg': b'cat', 'PetImages/../../evil.txt': b'x'}),
     "member 'PetImages/../../evil.txt' would be written outside"),
    (_zip_bytes({'PetImages/Cat/0.jpg': b'cat', '../evil.txt': b'x'}),
     "member '../evil.txt' would be written outside"),
    (_zip_bytes({'PetImages/Cat/0.jpg': b'cat', '/tmp/evil.txt': b'x'}),
     "member '/tmp/evil.txt' would be written outside"),
    (_symlink_zip(), "member 'PetImages/Dog/0.jpg' is a symbolic link"),
], ids=['dotdot inside', 'dotdot', 'absolute', 'symlink'])
def test_a_member_that_escapes_is_refused(serve, tmp_path, capsys, payload, says):
    url, _ = serve(payload, name=ZIP_NAME)
    data = tmp_path / 'deep' / 'data'
    message = _error_of(['petimages', '--url', url, '--dest', str(data), '--no-progress'],
                        capsys)
    assert says in message
    assert os.listdir(str(data)) == [] and os.listdir(str(tmp_path)) == ['deep']


@pytest.mark.parametrize('bound, value, members, says', [
    ('MAX_MEMBERS', 5, {'PetImages/%d.jpg' % i: b'x' for i in range(6)},
     'has 6 members, more than 5'),
    ('MAX_UNPACKED_BYTES', 2500, {'PetImages/%d.jpg' % i: _payload(1000, i) for i in range(3)},
     'would unpack to more than 2500 bytes'),
    ('MAX_RATIO', 100, {'PetImages/0.jpg': bytes(30000)},
     "member 'PetImages/0.jpg' would inflate"),
], ids=['members', 'total', 'ratio'])
def test_a_zip_past_a_bound_is_refused_before_anything_is_inflated(
        serve, tmp_path, capsys, monkeypatch, bound, value, members, says):
    url, _ = serve(_zip_bytes(members), name=ZIP_NAME)
    monkeypatch.setattr(download, bound, value)
    inflated = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, 'open',
                        lambda self, *args, **kw: inflated.append(args) or real_open(
                            self, *args, **kw))
    message = _error_of(['petimages', '--url', url, '--dest', str(tmp_path), '--no-progress'],
                        capsys)
    assert says in message and 'refused' in message
    assert inflated == []
    assert os.listdir(str(tmp_path)) == []
    # ...and just inside the bound it passes:
    monkeypatch.setattr(download, bound, value + {'MAX_MEMBERS': 1, 'MAX_UNPACKED_BYTES': 500,
                                                  'MAX_RATIO': 1000}[bound])
    assert _run(['petimages', '--url', url, '--dest', str(tmp_path), '--no-progress'],
                capsys)[0] == 0


def _patched_zip(flag_bits=0, method=zipfile.ZIP_DEFLATED):
    """PET_MEMBERS with the first member's flags and method changed in both its headers."""
    payload = bytearray(_zip_bytes(PET_MEMBERS))
    local, central = 0, bytes(payload).index(b'PK\x01\x02')
    struct.pack_into('<2H', payload, local + 6, flag_bits, method)
    struct.pack_into('<2H', payload, central + 8, flag_bits, method)
    return bytes(payload)


@pytest.mark.parametrize('payload, says', [
    (_patched_zip(flag_bits=0x1), "member 'PetImages/Cat/0.jpg' is encrypted; refused"),
    (_patched_zip(method=99), "member 'PetImages/Cat/0.jpg' uses compression method 99"),
], ids=['encrypted', 'AES'])
def test_a_member_zipfile_cannot_read_is_refused(serve, tmp_path, capsys, payload, says):
    url, _ = serve(payload, name=ZIP_NAME)
    message = _error_of(['petimages', '--url', url, '--dest', str(tmp_path), '--no-progress'],
                        capsys)
    assert says in message
    assert os.listdir(str(tmp_path)) == []


def test_the_bounds_fit_petimages_with_margin():
    assert download.MAX_MEMBERS >= 4 * 25000
    assert download.MAX_UNPACKED_BYTES >= 2 * 787 * 10 ** 6
    assert download.MAX_DIRECTORY_BYTES >= 4 * 25000 * 100     # ~100 bytes a member


def test_a_huge_central_directory_is_refused_before_zipfile_reads_it(serve, tmp_path, capsys,
                                                                     monkeypatch):
    payload = _zip_bytes({'PetImages/%d.jpg' % i: b'' for i in range(20)})
    url, _ = serve(payload, name=ZIP_NAME)
    monkeypatch.setattr(download, 'MAX_DIRECTORY_BYTES', 1000)   # 20 entries take ~1100

    def never(*args, **kwargs):
        raise AssertionError('zipfile parsed the directory')
    monkeypatch.setattr(zipfile, 'ZipFile', never)
    message = _error_of(['petimages', '--url', url, '--dest', str(tmp_path), '--no-progress'],
                        capsys)
    assert 'has a central directory of' in message and 'more than 1000 bytes' in message


def test_a_zip64_directory_is_measured_where_zipfile_reads_it(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(zipfile, 'ZIP_FILECOUNT_LIMIT', 1)   # makes zipfile write zip64 ends
        payload = bytearray(_zip_bytes(PET_MEMBERS))
    end = bytes(payload).rindex(b'PK\x05\x06')
    payload[end + 12:end + 16] = b'\xff' * 4        # "see the zip64 record for the size"
    path = tmp_path / ZIP_NAME
    path.write_bytes(bytes(payload))
    with zipfile.ZipFile(str(path)) as archive:     # zipfile reads it...
        directory = sum(46 + len(info.filename) for info in archive.infolist())
    download.verify_zip(str(path))                  # ...and so do we
    assert download._zip_directory_bytes(str(path)) == directory


def test_a_member_inflating_past_its_declared_size_yields_only_that_size(tmp_path):
    deflated, _ = _deflated_zeros(1)
    path = tmp_path / ZIP_NAME
    path.write_bytes(_one_member_zip('PetImages/Cat/0.jpg', deflated,
                                     zlib.crc32(bytes(1000)), 1000))
    download.unpack_petimages(str(path), str(tmp_path), progress=False)
    assert _read(tmp_path / 'PetImages' / 'Cat' / '0.jpg') == bytes(1000)   # not 1 MiB


def test_a_member_lying_about_its_size_fails_its_check(serve, tmp_path, capsys):
    deflated, crc = _deflated_zeros(1)           # the CRC of the whole MiB, size 1000
    url, _ = serve(_one_member_zip('PetImages/Cat/0.jpg', deflated, crc, 1000), name=ZIP_NAME)
    message = _error_of(['petimages', '--url', url, '--dest', str(tmp_path), '--no-progress'],
                        capsys)
    assert 'PetImages/Cat/0.jpg is corrupt' in message
    assert os.listdir(str(tmp_path)) == []


def test_unpacking_stops_a_member_that_yields_more_than_declared(tmp_path, monkeypatch):
    """Should zipfile ever stop cutting a member at its declared size, this stops it."""
    path = tmp_path / ZIP_NAME
    path.write_bytes(_zip_bytes(PET_MEMBERS))
    monkeypatch.setattr(download, 'CHUNK_SIZE', 100)
    written = []

    monkeypatch.setattr(zipfile.ZipFile, 'open', lambda self, member: io.BytesIO(bytes(
        10 * member.file_size)))                  # 10 times what it declares
    real_open = open
    monkeypatch.setattr(download, 'open', lambda path, mode='r': (
        written.append(path) if 'w' in mode else None) or real_open(path, mode), raising=False)
    with pytest.raises(download.DownloadError, match='inflates past its declared 750 bytes'):
        download.unpack_petimages(str(path), str(tmp_path), progress=False)
    assert os.path.getsize(str(path)) > 0 and os.listdir(str(tmp_path)) == [ZIP_NAME]
    assert len(written) == 1                       # stopped at the first member


def test_a_zip_already_there_is_checked_before_it_is_unpacked(serve, tmp_path, capsys):
    data = tmp_path / 'data'
    data.mkdir()
    (data / ZIP_NAME).write_bytes(_symlink_zip())      # left by someone, not downloaded
    url, state = serve(_zip_bytes(PET_MEMBERS), name=ZIP_NAME)
    code, out, _ = _run(['petimages', '--url', url, '--dest', str(data), '--no-progress'],
                        capsys)
    assert code == 0
    assert 'is there but broken' in out and 'symbolic link' in out
    assert len(state.requests) == 1
    assert sorted(os.listdir(str(data / 'PetImages'))) == ['Cat', 'Dog']


def test_too_little_space_to_unpack_is_said_before_unpacking(tmp_path, monkeypatch):
    path = tmp_path / ZIP_NAME
    path.write_bytes(_zip_bytes(PET_MEMBERS))
    usage = download.shutil.disk_usage(str(tmp_path))
    monkeypatch.setattr(download.shutil, 'disk_usage', lambda p: usage._replace(free=1000))
    with pytest.raises(download.DownloadError, match='not enough disk space'):
        download.unpack_petimages(str(path), str(tmp_path), progress=False)   # needs 1500
    assert os.listdir(str(tmp_path)) == [ZIP_NAME]


# --- the worst cases, in a subprocess with capped memory and file size -----------

RUNNER = r'''
import resource, sys
memory, file_size, max_bytes = (int(arg) for arg in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))   # past it: EFBIG
resource.setrlimit(resource.RLIMIT_CPU, (60, 60))
import download
if max_bytes:
    download.TARGETS['weights'] = download.TARGETS['weights']._replace(max_bytes=max_bytes)
sys.exit(download.main(sys.argv[4:]))
'''
MEMORY = 512 << 20      # the script needs ~120 MB; a body or member held in memory would not fit


def _run_capped(argv, file_size, max_bytes=0):
    """Runs download.py's main(argv) in a capped subprocess; returns (status, stderr)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS='1', OMP_NUM_THREADS='1')
    done = subprocess.run([sys.executable, '-c', RUNNER, str(MEMORY), str(file_size),
                           str(max_bytes)] + argv, cwd=ROOT, env=env, timeout=120,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return done.returncode, done.stderr.decode()


def test_a_flood_without_length_is_one_line_in_bounded_memory_and_disk(serve, tmp_path):
    url, state = serve(respond=_flood(size=2 * MEMORY))     # more than would fit in memory
    bound = 8 << 20
    code, err = _run_capped(['weights', '--url', url, '--dest', str(tmp_path / 'w.npy'),
                             '--no-progress'], file_size=bound + download.CHUNK_SIZE,
                            max_bytes=bound)
    assert code == 2, err
    assert err.count('\n') == 1 and err.startswith('error: ') and 'Traceback' not in err
    assert 'without announcing a length' in err
    assert state.sent >= bound           # it did read up to the bound
    assert os.listdir(str(tmp_path)) == []


def test_a_zip_bomb_is_one_line_in_bounded_memory_and_disk(serve, tmp_path):
    deflated, crc = _deflated_zeros(1024)      # 1 MB that inflates to 1 GiB
    bomb = _one_member_zip('PetImages/Cat/0.jpg', deflated, crc, 1 << 30)
    url, _ = serve(bomb, name=ZIP_NAME)
    code, err = _run_capped(['petimages', '--url', url, '--dest', str(tmp_path),
                             '--no-progress'], file_size=len(bomb) + download.CHUNK_SIZE)
    assert code == 2, err
    assert err.count('\n') == 1 and err.startswith('error: ') and 'Traceback' not in err
    assert 'a zip bomb? refused' in err
    assert os.listdir(str(tmp_path)) == []


# --- command line ------------------------------------------------------------------

def test_parse_args_defaults():
    args = download.parse_args(['weights'])
    assert (args.what, args.url, args.dest) == ('weights', None, None)
    assert download.main(['imagenet']) == 2


def test_the_script_exits_with_mains_status(tmp_path):
    done = subprocess.run([sys.executable, 'download.py', 'weights', '--url', 'ftp://x/y',
                           '--dest', str(tmp_path / 'w.npy')], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert done.returncode == 2
    assert done.stderr.decode() == ("error: 'ftp://x/y' is not an http:// or https:// "
                                    "address; pass one with --url\n")
