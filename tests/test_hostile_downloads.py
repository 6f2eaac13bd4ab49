"""Hostile and broken servers, each answered through download.py's command line in a child
process under an address-space and a time limit (tests/script_worker.py).

The servers run here, on 127.0.0.1 (test_download.py's fixtures); the command runs in
the worker. Each case must end with the documented exit status and one line, no
traceback, no hang, bounded memory, and nothing half-written left where the
scripts look: the finished file, or nothing (a .part kept only where resuming helps).
"""
import os
import sys

import pytest

from script_worker import ScriptWorker
from test_download import (ETAG, PET_MEMBERS, ZIP_NAME, _begun, _deflated_zeros, _flood,  # noqa
                           _one_member_zip, _payload, _raw, _read, _redirect, _symlink_zip,
                           _zip_bytes, serve)

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'),
                                reason='the worker sets RLIMIT_AS')

LIMIT_MB = 2500     # checking a weight file imports TensorFlow (about 1.7 GB of address space)


@pytest.fixture(scope='module')
def worker():
    with ScriptWorker(LIMIT_MB, timeout=180) as process:
        yield process


def fails(worker, argv, says):
    """download.py argv in the worker: exit status 2 and exactly one line saying `says`."""
    result = worker.main('download', argv + ['--no-progress'])
    assert result.code == 2 and 'Traceback' not in result.err, result
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), result.err
    assert says in lines[0], lines[0]
    return lines[0]


def weights(url, folder):
    return ['weights', '--url', url, '--dest', str(folder / 'bvlc_alexnet.npz')]


def pets(url, folder):
    return ['petimages', '--url', url, '--dest', str(folder)]


MALFORMED = [
    (b'HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n', "broken Content-Length ('abc')"),
    (b'HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n', "broken Content-Length ('-5')"),
    (b'HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n', 'more than the 300'),
    (b'SSH-2.0-OpenSSH\r\n\r\n', 'did not answer in HTTP'),
    (b'HTTP/1.1 200 OK\r\n' + b'X-A: b\r\n' * 500 + b'\r\n', 'did not answer in HTTP'),
    (b'HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n', 'HTTP 500'),
    (b'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n', 'HTTP 404'),
    (b'HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 5-9/10\r\n'
     b'Content-Length: 5\r\n\r\n', 'answered HTTP 206'),
]


@pytest.mark.parametrize('head, says', MALFORMED, ids=['length abc', 'length -5', 'length 1e20',
                                                       'not http', '500 headers', '500', '404',
                                                       '206 unasked'])
def test_a_malformed_answer_is_one_line(worker, serve, tmp_path, head, says):
    url, _ = serve(respond=_raw(head, b'x' * 100), name='bvlc_alexnet.npy')
    fails(worker, weights(url, tmp_path), says)
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize('to', [lambda n: '/bvlc_alexnet.npy', lambda n: '/hop%d' % n,
                                lambda n: 'file:///etc/passwd'], ids=['loop', 'hops', 'file'])
def test_a_bad_redirect_is_one_line(worker, serve, tmp_path, to):
    url, state = serve(respond=_redirect(to), name='bvlc_alexnet.npy')
    fails(worker, weights(url, tmp_path), 'redirects')
    assert len(state.requests) <= 11


def test_an_endless_body_without_length_stops_at_the_bound(worker, serve, tmp_path):
    url, state = serve(respond=_flood(size=600 << 20), name='bvlc_alexnet.npy')   # 600 MB
    fails(worker, weights(url, tmp_path), 'without announcing a length')
    assert 300 * 10 ** 6 <= state.sent < 600 << 20       # read to the 300 MB bound, not on
    assert os.listdir(str(tmp_path)) == []


def test_a_body_past_its_announced_length_is_cut_there(worker, serve, tmp_path):
    url, state = serve(respond=_flood(length=1000, size=8 << 20), name='bvlc_alexnet.npy')
    fails(worker, weights(url, tmp_path), 'failed its check')   # 1000 zeros: not weights
    assert os.listdir(str(tmp_path)) == []


def test_an_error_page_served_as_the_weights_is_refused(worker, serve, tmp_path):
    url, _ = serve(b'<html>Sign in to download</html>', name='bvlc_alexnet.npy')
    fails(worker, weights(url, tmp_path), 'failed its check')
    assert os.listdir(str(tmp_path)) == []


def test_a_caffemodel_that_is_not_the_bvlc_file_is_never_read(worker, serve, tmp_path):
    url, _ = serve(b'\x0a\x07AlexNet' + os.urandom(1000), name='bvlc_alexnet.caffemodel')
    fails(worker, weights(url, tmp_path), 'not 9116a64c0fbe4459d18f4bb6b56d647b63920377')
    assert os.listdir(str(tmp_path)) == []


def test_a_part_of_another_file_is_never_spliced(worker, serve, tmp_path):
    """A .part begun from one address, resumed against another: the download starts over."""
    zipped = _zip_bytes(PET_MEMBERS)
    url, state = serve(zipped, name=ZIP_NAME)
    other = _payload(len(zipped))
    _begun(tmp_path / ZIP_NAME, 'http://127.0.0.1:1/another.zip', other[:500])
    result = worker.main('download', pets(url, tmp_path) + ['--no-progress'])
    assert result.code == 0, result
    assert 'Range' not in state.requests[0]
    assert _read(tmp_path / 'PetImages' / 'Cat' / '0.jpg') == PET_MEMBERS['PetImages/Cat/0.jpg']


def test_a_changed_file_on_the_server_is_not_spliced(worker, serve, tmp_path):
    """The same address, another version (its ETag): If-Range makes the server send it whole."""
    zipped = _zip_bytes(PET_MEMBERS)
    url, state = serve(zipped, name=ZIP_NAME, etag='"v2"')
    _begun(tmp_path / ZIP_NAME, url, _payload(500), etag=ETAG)        # begun from "v1"
    result = worker.main('download', pets(url, tmp_path) + ['--no-progress'])
    assert result.code == 0, result
    assert state.requests[0].get('If-Range') == ETAG
    assert _read(tmp_path / 'PetImages' / 'Dog' / '0.jpg') == PET_MEMBERS['PetImages/Dog/0.jpg']


def test_a_zip_bomb_is_refused_before_it_inflates(worker, serve, tmp_path):
    deflated, crc = _deflated_zeros(1024)                   # 1 MB that inflates to 1 GiB
    url, _ = serve(_one_member_zip('PetImages/Cat/0.jpg', deflated, crc, 1 << 30), name=ZIP_NAME)
    fails(worker, pets(url, tmp_path), 'a zip bomb? refused')
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize('payload, says', [
    (_zip_bytes({'PetImages/Cat/0.jpg': b'cat', 'PetImages/../../evil': b'x'}), 'outside'),
    (_zip_bytes({'PetImages/Cat/0.jpg': b'cat', '/etc/evil': b'x'}), 'outside'),
    (_symlink_zip(), 'is a symbolic link'),
    (_zip_bytes({'readme.txt': b'no photos'}), 'no PetImages/ folder'),
    (b'PK\x05\x06' + b'\x00' * 18, 'PetImages'),
], ids=['dotdot', 'absolute', 'symlink', 'no PetImages', 'empty zip'])
def test_a_zip_that_escapes_or_holds_nothing_is_refused(worker, serve, tmp_path, payload, says):
    url, _ = serve(payload, name=ZIP_NAME)
    fails(worker, pets(url, tmp_path / 'data'), says)
    assert not os.path.exists(str(tmp_path / 'evil')) and not os.path.exists('/etc/evil')


def test_a_record_beside_the_part_that_is_garbage_starts_over(worker, serve, tmp_path):
    zipped = _zip_bytes(PET_MEMBERS)
    url, state = serve(zipped, name=ZIP_NAME)
    (tmp_path / (ZIP_NAME + '.part')).write_bytes(zipped[:100])
    (tmp_path / (ZIP_NAME + '.part.json')).write_text('[' * 100000)
    result = worker.main('download', pets(url, tmp_path) + ['--no-progress'])
    assert result.code == 0 and 'Range' not in state.requests[0], result
