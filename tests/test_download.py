"""Tests for download.py against local HTTP servers on 127.0.0.1 (never the internet).

Each server is a ThreadingHTTPServer on a random port serving one payload; its
`mode` adds the faults a real download meets: a server that ignores Range, a
connection dropped mid-file, a 404.
"""
import errno
import http.server
import io
import os
import socket
import threading
import zipfile

import numpy as np
import pytest

import download
import weight_formats
from conftest import exit_error, write_py2_weights_npy

# A tiny stand-in for bvlc_alexnet's layer shapes, so fixtures stay a few KB.
TINY_SHAPES = weight_formats.tiny_shapes(10)   # all of AlexNet's layers, a few values each


class _State(object):
    def __init__(self, payload, mode):
        self.payload = payload
        self.mode = mode
        self.requests = []     # the headers of each request, in order
        self.sent = 0          # body bytes sent in all


def _handler(state):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            state.requests.append(dict(self.headers))
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
            if wanted and state.mode != 'ignore-range':
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
            self.end_headers()
            body = body[:stop_at] if stop_at is not None else body
            self.wfile.write(body)
            self.wfile.flush()
            state.sent += len(body)

        def log_message(self, *args):
            pass
    return Handler


@pytest.fixture
def serve():
    """serve(payload, mode='range') -> (url, state); servers stop after the test."""
    servers = []

    def start(payload, mode='range', name='file.bin'):
        state = _State(payload, mode)
        server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _handler(state))
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05})
        thread.daemon = True
        thread.start()
        servers.append((server, thread))
        return 'http://127.0.0.1:%d/%s' % (server.server_address[1], name), state

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _payload(size=3 * 1024 * 1024 + 123, seed=0):
    return np.random.RandomState(seed).bytes(size)


def _read(path):
    with open(path, 'rb') as f:
        return f.read()


def _error_of(argv):
    """Runs download.main(argv), returns its one-line error."""
    return exit_error(download.main, argv)


# --- fetch: resume, Range, faults ---------------------------------------------

def test_fetch_writes_the_file_and_no_part(serve, tmp_path):
    payload = _payload()
    url, state = serve(payload)
    dest = tmp_path / 'sub' / 'file.bin'
    download.fetch(url, str(dest), progress=False)
    assert _read(dest) == payload
    assert not os.path.exists(str(dest) + '.part')
    assert 'Range' not in state.requests[0]


def test_fetch_resumes_a_part_with_a_range_request(serve, tmp_path):
    payload = _payload()
    url, state = serve(payload)
    dest = tmp_path / 'file.bin'
    (tmp_path / 'file.bin.part').write_bytes(payload[:1000])
    download.fetch(url, str(dest), progress=False)
    assert _read(dest) == payload
    assert state.requests[0]['Range'] == 'bytes=1000-'
    assert state.sent == len(payload) - 1000       # only the rest came over the wire


def test_server_ignoring_range_restarts_from_zero(serve, tmp_path, capsys):
    payload = _payload()
    url, state = serve(payload, mode='ignore-range')
    dest = tmp_path / 'file.bin'
    (tmp_path / 'file.bin.part').write_bytes(payload[:1000])
    download.fetch(url, str(dest), progress=False)
    assert _read(dest) == payload                   # not 1000 bytes too long
    assert 'ignored the request to resume' in capsys.readouterr().err
    assert state.requests[0]['Range'] == 'bytes=1000-'


def test_dropped_connection_is_resumed_with_range(serve, tmp_path, capsys):
    payload = _payload()
    url, state = serve(payload, mode='drop-once')
    dest = tmp_path / 'file.bin'
    download.fetch(url, str(dest), progress=False)
    assert _read(dest) == payload
    assert len(state.requests) == 2
    assert 'Range' not in state.requests[0]
    assert state.requests[1]['Range'] == 'bytes=%d-' % (len(payload) // 2)
    assert 'resuming (attempt 2 of 3)' in capsys.readouterr().err


def test_dropped_connection_keeps_the_part_for_the_next_run(serve, tmp_path):
    payload = _payload()
    url, state = serve(payload, mode='drop-once')
    dest = tmp_path / 'file.bin'
    with pytest.raises(download.DownloadError, match='run the same command again to resume'):
        download.fetch(url, str(dest), progress=False, attempts=1)
    assert not dest.exists()
    assert _read(str(dest) + '.part') == payload[:len(payload) // 2]
    download.fetch(url, str(dest), progress=False)    # "run it again"
    assert _read(dest) == payload
    assert state.requests[1]['Range'] == 'bytes=%d-' % (len(payload) // 2)


def test_complete_part_needs_no_more_bytes(serve, tmp_path):
    payload = _payload(5000)
    url, state = serve(payload)
    dest = tmp_path / 'file.bin'
    (tmp_path / 'file.bin.part').write_bytes(payload)    # the server answers 416
    download.fetch(url, str(dest), progress=False)
    assert _read(dest) == payload
    assert state.sent == 0


def test_http_404_is_one_clear_line(serve, tmp_path):
    url, _ = serve(b'', mode='404')
    message = _error_of(['weights', '--url', url, '--dest', str(tmp_path / 'w.npy'),
                         '--no-progress'])
    assert 'HTTP 404' in message and url in message
    assert os.listdir(str(tmp_path)) == []


def test_no_network_is_one_clear_line(tmp_path):
    with socket.socket() as probe:                  # a port nobody listens on
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    url = 'http://127.0.0.1:%d/bvlc_alexnet.npy' % port
    message = _error_of(['weights', '--url', url, '--dest', str(tmp_path / 'w.npy'),
                         '--no-progress'])
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
        return _FullDisk(open(path, mode, *args, **kwargs), room)

    monkeypatch.setattr(download, 'open', full_disk_open, raising=False)
    with pytest.raises(download.DownloadError, match='disk is full') as error:
        download.fetch(url, str(dest), progress=False)
    assert 'free some space' in str(error.value)
    assert _read(str(dest) + '.part') == payload[:room]     # a correct prefix, kept
    assert not dest.exists()

    monkeypatch.undo()
    download.fetch(url, str(dest), progress=False)
    assert _read(dest) == payload
    assert state.requests[-1]['Range'] == 'bytes=%d-' % room


def test_too_little_free_space_is_said_before_downloading(serve, tmp_path, monkeypatch):
    url, _ = serve(_payload())
    usage = download.shutil.disk_usage(str(tmp_path))
    monkeypatch.setattr(download.shutil, 'disk_usage',
                        lambda path: usage._replace(free=1000))
    with pytest.raises(download.DownloadError, match='not enough disk space'):
        download.fetch(url, str(tmp_path / 'file.bin'), progress=False)
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
    dest = tmp_path / 'weights' / 'bvlc_alexnet.npy'
    download.main(['weights', '--url', url, '--dest', str(dest), '--no-progress'])
    assert _read(dest) == payload
    assert 'every layer checked' in capsys.readouterr().out

    download.main(['weights', '--url', url, '--dest', str(dest), '--no-progress'])
    assert 'already there' in capsys.readouterr().out


@pytest.mark.parametrize('fault', ['truncated', 'wrong shape'])
def test_bad_weights_never_get_the_final_name(serve, tmp_path, tiny_shapes, fault):
    if fault == 'truncated':
        payload = _weights_bytes(tmp_path, TINY_SHAPES)[:-100]
    else:
        payload = _weights_bytes(tmp_path, weight_formats.tiny_shapes(2))
    url, _ = serve(payload, name='bvlc_alexnet.npy')
    dest = tmp_path / 'bvlc_alexnet.npy'
    message = _error_of(['weights', '--url', url, '--dest', str(dest), '--no-progress'])
    assert 'failed its check' in message
    assert ('fc8/weights has shape (3, 2), the model expects (3, 10)' in message
            if fault == 'wrong shape'
            else 'truncated or corrupt' in message)
    assert os.listdir(str(tmp_path)) == []           # neither the file nor a .part


def test_expected_shapes_are_bvlc_alexnets():
    shapes = download.expected_shapes()
    assert shapes['conv1'] == ((11, 11, 3, 96), (96,))
    assert shapes['fc8'] == ((4096, 1000), (1000,))


# --- petimages: a zip checked member by member, then unpacked -------------------

def _zip_bytes(members, compression=zipfile.ZIP_DEFLATED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


PET_MEMBERS = {
    'PetImages/Cat/0.jpg': b'cat photo bytes' * 50,
    'PetImages/Dog/0.jpg': b'dog photo bytes' * 50,
    'readme[1].txt': b'not part of the data set',
}


def test_petimages_unpacks_to_data_petimages(serve, tmp_path, capsys):
    url, _ = serve(_zip_bytes(PET_MEMBERS), name='kagglecatsanddogs_5340.zip')
    data = tmp_path / 'data'
    download.main(['petimages', '--url', url, '--dest', str(data), '--no-progress'])
    assert _read(data / 'PetImages' / 'Cat' / '0.jpg') == PET_MEMBERS['PetImages/Cat/0.jpg']
    assert _read(data / 'PetImages' / 'Dog' / '0.jpg') == PET_MEMBERS['PetImages/Dog/0.jpg']
    assert sorted(os.listdir(str(data))) == ['PetImages']    # zip and readme gone
    assert 'unpacked to' in capsys.readouterr().out

    download.main(['petimages', '--url', url, '--dest', str(data), '--no-progress'])
    assert 'already there' in capsys.readouterr().out


def test_zip_with_a_corrupt_member_fails_its_crc(serve, tmp_path):
    payload = bytearray(_zip_bytes(PET_MEMBERS, zipfile.ZIP_STORED))
    offset = bytes(payload).index(b'dog photo bytes')
    payload[offset] ^= 0xFF                            # one flipped byte in Dog/0.jpg
    url, _ = serve(bytes(payload), name='kagglecatsanddogs_5340.zip')
    data = tmp_path / 'data'
    message = _error_of(['petimages', '--url', url, '--dest', str(data), '--no-progress'])
    assert 'PetImages/Dog/0.jpg fails its CRC check' in message
    assert os.listdir(str(data)) == []                 # no zip, no .part, no PetImages


def test_not_a_zip_fails_its_check(serve, tmp_path):
    url, _ = serve(b'<html>a login page, not a zip</html>', name='pets.zip')
    message = _error_of(['petimages', '--url', url, '--dest', str(tmp_path),
                         '--no-progress'])
    assert 'not a readable zip' in message
    assert os.listdir(str(tmp_path)) == []


def test_parse_args_defaults():
    args = download.parse_args(['weights'])
    assert (args.what, args.url, args.dest) == ('weights', None, None)
    assert download.TARGETS['weights'] == (download.WEIGHTS_URL, 'weights/bvlc_alexnet.npy')
    with pytest.raises(SystemExit) as exit_info:
        download.parse_args(['imagenet'])
    assert exit_info.value.code == 2
