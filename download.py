"""Downloads what the course needs: the pretrained weights and the Cats and Dogs photos.

    python download.py weights     # -> weights/bvlc_alexnet.npz (233 MB)
    python download.py petimages   # -> data/PetImages/Cat, data/PetImages/Dog (787 MB zip)

The weights are Caffe's bvlc_alexnet (the paper's network, section 3), taken
from the first source that answers, in this order:

1. the BVLC model zoo's bvlc_alexnet.caffemodel (232 MB), checked against its
   published SHA-1 9116a64c0fbe4459d18f4bb6b56d647b63920377 before anything
   reads it, from dl.caffe.berkeleyvision.org, then from MXNet's mirror of the
   same file;
2. the course's bvlc_alexnet.npy (Caffe's converted by caffe-tensorflow), whose
   every layer is checked (no checksum is published for it).

Either is converted to weights/bvlc_alexnet.npz, this project's safe format,
which every script reads by default; the downloaded file stays beside it (the
caffemodel is what `python alexnet.py --check-against-opencv` runs). A
bvlc_alexnet.caffemodel or .npy already in weights/ (from a course share, say)
is converted without the network. Caffe's mean image imagenet_mean.binaryproto
(SHA-1 63e4652e656abc1e87b7a8339a7e02fca63a2c0c, for `evaluate.py --preprocess
caffe`) comes along; if it cannot be fetched, that is a warning. The photos are
Microsoft's Kaggle "Dogs vs. Cats" set, used by the fine-tuning homework.

How a download goes, so that a half, foreign or broken file never sits where
the other scripts look for it:

1. Bytes go to ``<dest>.part``; beside it ``<dest>.part.json`` records where they
   came from: the URL, the server's validator for that version of the file (its
   ETag, else its Last-Modified date) and the total length.
2. If a ``.part`` exists from an interrupted run, only the rest is asked for, and
   only if the server proves it is the same file: the request carries ``Range``
   plus ``If-Range`` with the recorded validator. A server that sends the whole
   file instead (200, not 206) has a different version, or does not resume: the
   download starts over from zero. So does a ``.part`` without its record, with
   another URL in it, or whose answer's ``Content-Range`` does not continue it.
   A dropped connection is resumed the same way a few times.
3. No body is trusted to end by itself: it may not run past the length the
   server announced, and one without a length stops at the target's
   ``max_bytes`` (the ``TARGETS`` table below).
4. The complete file is verified: the weights must be a whole, finite AlexNet with
   every layer in its shape (weight_files.load_weights with the expected shapes);
   the zip's directory must stay within
   the unpacking bounds below and every member must pass its CRC.
5. Only then is it renamed to its final name (the zip is then unpacked into a
   temporary folder and renamed to ``PetImages`` the same way).

Unpacking the zip is bounded before anything is written, from the zip's central
directory: at most MAX_MEMBERS members, MAX_UNPACKED_BYTES in all, each member
at most MAX_RATIO times its compressed size; no symlinks, absolute paths or '..'.
While unpacking, a member that inflates past its declared size is stopped.

Errors (no network, HTTP errors, a misbehaving server, a full disk, a failed
check) end with one line ``error: ...`` saying what to do, and exit status 2;
Ctrl-C exits with 130. Run the same command again after an interruption: it resumes.
"""
from __future__ import annotations

import collections
import errno
import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import struct
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib

from tqdm import tqdm

import caffemodel
import command_line
import weight_files

MB = 10 ** 6

WEIGHTS_URL = 'http://www.cs.toronto.edu/~guerzhoy/tf_alexnet/bvlc_alexnet.npy'
CAFFEMODEL_URLS = (
    'http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel',
    'https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/caffe/models/bvlc_alexnet/'
    'bvlc_alexnet.caffemodel',
)
MEAN_URL = ('https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/caffe/models/'
            'bvlc_alexnet/imagenet_mean.binaryproto')
PETIMAGES_URL = ('https://download.microsoft.com/download/3/E/1/'
                 '3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip')
PETIMAGES_FOLDER = 'PetImages'    # the zip's top folder, holding Cat/ and Dog/

# url, dest: the defaults of --url and --dest.
# max_bytes: no download of this target may be larger; it bounds a body that
#   announces no length (and refuses one that announces more), so a broken or
#   hostile server cannot fill the disk. About 1.2 times the real file.
Target = collections.namedtuple('Target', ['url', 'dest', 'max_bytes'])
TARGETS = {
    'weights': Target(None, 'weights/bvlc_alexnet.npz', 300 * MB),   # 233 MiB = 244 MB
    'petimages': Target(PETIMAGES_URL, 'data', 1000 * MB),         # 787 MiB = 825 MB
}

# One place to get a file from: its address, its name in weights/, the SHA-1 it
# must have (None: none is published; then its contents are checked), its bound.
Source = collections.namedtuple('Source', ['url', 'name', 'sha1', 'max_bytes'])
BVLC_ALEXNET_SHA1 = '9116a64c0fbe4459d18f4bb6b56d647b63920377'
IMAGENET_MEAN_SHA1 = '63e4652e656abc1e87b7a8339a7e02fca63a2c0c'
WEIGHT_SOURCES = tuple(Source(url, 'bvlc_alexnet.caffemodel', BVLC_ALEXNET_SHA1, 300 * MB)
                       for url in CAFFEMODEL_URLS) + (
    Source(WEIGHTS_URL, 'bvlc_alexnet.npy', None, 300 * MB),)
MEAN_SOURCE = Source(MEAN_URL, 'imagenet_mean.binaryproto', IMAGENET_MEAN_SHA1, 2 * MB)

# Bounds on unpacking the zip, with margin: PetImages holds 25,000 JPEGs (they
# hardly compress: ratio about 1:1) in 787 MiB, in a central directory of a few MB.
MAX_MEMBERS = 100000             # files and folders in the zip
MAX_UNPACKED_BYTES = 2000 * MB   # all members together, as the directory declares them
MAX_RATIO = 100                  # a member's size over its compressed size
MAX_DIRECTORY_BYTES = 16 * MB    # the central directory, measured before zipfile parses it

CHUNK_SIZE = 1 << 20       # read and write 1 MiB at a time
TIMEOUT = 60               # seconds without data before giving up on a connection
ATTEMPTS = 3               # a dropped connection is resumed this many times in all
MAX_REDIRECTS = 10
USER_AGENT = 'alexnet-course-download/1.0 (Python urllib)'


class DownloadError(Exception):
    """A download or check failed; the message says what to do."""


# --- Fetching one URL into a file, with resume ------------------------------

def fetch(url, dest, max_bytes, verify=None, progress=True, attempts=ATTEMPTS):
    """Downloads `url` to `dest`, through `dest + '.part'`, resuming where it stopped.

    Args:
      url: http(s) address.
      dest: the final file name; it appears only once complete and verified.
      max_bytes: the largest file accepted; a body without a length stops there.
      verify: called with the .part path when complete; raises DownloadError
        (or weight_files.WeightFileError) if the file is bad.
      progress: show a tqdm progress bar.
      attempts: how often a dropped connection is tried (resuming, with Range).
    Returns:
      dest.
    Raises:
      DownloadError: with a message that says what to do. The .part file is
        kept when resuming can help (dropped connection, full disk) and
        deleted when its content is known to be bad.
    """
    dest = os.fspath(dest)
    part = dest + '.part'
    check_url(url)
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    for attempt in range(1, attempts + 1):
        try:
            _fetch_once(url, part, max_bytes, progress)
            break
        except _ConnectionLost as lost:
            if attempt == attempts:
                raise DownloadError(
                    'the connection dropped (%s) after %s; the part is kept in %s: '
                    'run the same command again to resume' % (lost, _size(part), part)) from None
            print('connection dropped (%s) after %s; resuming (attempt %d of %d)'
                  % (lost, _size(part), attempt + 1, attempts), file=sys.stderr)
    if verify is not None:
        try:
            verify(part)
        except (DownloadError, weight_files.WeightFileError) as err:
            # A complete file that fails its check will not get better by resuming.
            _start_over(part)
            raise DownloadError('the downloaded file failed its check and was deleted: %s; '
                                'try again later, or download %s by hand'
                                % (err, url)) from None
    os.replace(part, dest)
    _remove(_record_path(part))
    return dest


def check_url(url):
    """Raises DownloadError unless `url` is an http(s) address with a host."""
    try:
        parsed = urllib.parse.urlparse(url)
        usable = parsed.scheme in ('http', 'https') and parsed.hostname
    except ValueError:     # e.g. 'http://[::1' or a port that is not a number
        usable = False
    if not usable:
        raise DownloadError('%r is not an http:// or https:// address; pass one with --url'
                            % url)


class _ConnectionLost(Exception):
    """The connection broke mid-file; what arrived is in the .part file."""


class _BodyTooLong(Exception):
    """The body ran past the bytes it may have; nothing past them was written."""


def _fetch_once(url, part, max_bytes, progress):
    """One HTTP request: appends the missing bytes to `part` (or restarts it)."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    record = _read_record(part) if have else None
    if have and not _can_resume(part, url, record):
        _start_over(part)
        have, record = 0, None

    request = urllib.request.Request(url, headers={'User-Agent': USER_AGENT})
    if have:
        request.add_header('Range', 'bytes=%d-' % have)
        # "Send the rest only if the file is still the one with this validator,
        # else all of it": a changed file comes back whole (200), never spliced.
        request.add_header('If-Range', _validator(record))
    try:
        response = _open(request, url)
    except _RangeNotSatisfiable as err:
        if not have:
            raise DownloadError('%s answered HTTP 416 to a request for the whole file; try '
                                'again later, or download it by hand' % url) from None
        # We asked for bytes past the end: of the same version (If-Range held), so...
        if err.total == have and record['total'] in (None, have):
            return                                          # ...the part is complete
        print('the server says the file has %s bytes, but %s holds %d; starting over'
              % (err.total, part, have), file=sys.stderr)   # ...or it is not a prefix
        _start_over(part)
        return _fetch_once(url, part, max_bytes, progress)

    with response:
        length = _content_length(response.headers, url)
        if response.status == 206 and have:
            sizes = _continues(response.headers, record, have, length)
            if sizes is None:
                print('the server\'s answer (Content-Range: %s) does not continue %s at '
                      'byte %d of the recorded file; starting over'
                      % (response.headers.get('Content-Range'), part, have), file=sys.stderr)
                response.close()
                _start_over(part)
                return _fetch_once(url, part, max_bytes, progress)
            total, expected = sizes
            mode = 'ab'                                     # append the rest
        elif response.status == 200:
            if have:
                print('the server sent the whole file (HTTP 200), not the rest: it changed '
                      'since %s was begun, or it cannot resume; downloading from the start'
                      % part, file=sys.stderr)
            have, total, expected = 0, length, length
            mode = 'wb'                                     # (re)start from zero
        else:
            raise DownloadError('%s answered HTTP %d %s, not the file; check the address, or '
                                'pass another with --url' % (url, response.status,
                                                             response.reason))
        announced = total if total is not None else have + (expected or 0)
        if announced > max_bytes:
            raise DownloadError('%s is %s, more than the %s this download can be; check the '
                                'address, or pass another with --url'
                                % (url, _amount(announced), _amount(max_bytes)))
        _check_free_space(part, expected or 0)
        if mode == 'wb':
            _start_over(part)
            _write_record(part, url, response.headers, total)
        limit = expected if expected is not None else max_bytes - have
        with tqdm(total=total, initial=have, unit='B', unit_scale=True, unit_divisor=1024,
                  desc=os.path.basename(part)[:-len('.part')], disable=not progress) as bar:
            try:
                _copy(response, part, mode, bar, limit)
            except _BodyTooLong:
                _start_over(part)
                if expected is not None:
                    raise DownloadError('%s sent more than the %d bytes it announced; the '
                                        'part was deleted: try again later, or download it '
                                        'by hand' % (url, have + expected)) from None
                raise DownloadError('%s sent more than %s without announcing a length, more '
                                    'than this download can be; the part was deleted: check '
                                    'the address, or pass another with --url'
                                    % (url, _amount(max_bytes))) from None
    got = os.path.getsize(part)
    if total is not None and got < total:
        raise _ConnectionLost('got %d of %d bytes' % (got, total))


class _RangeNotSatisfiable(Exception):
    """HTTP 416: the Range asked for starts past the end of the file."""

    def __init__(self, total):
        super().__init__(total)
        self.total = total      # the file's length, from 'Content-Range: bytes */1000'


def _open(request, url):
    """urlopen with redirects limited to http(s); every failure becomes one
    DownloadError line, but HTTP 416, raised as _RangeNotSatisfiable."""
    host = urllib.parse.urlparse(url).netloc
    try:
        return urllib.request.build_opener(_Redirects).open(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as err:
        err.close()
        if 300 <= err.code < 400:
            raise DownloadError('%s redirects in a loop, more than %d times, nowhere, or to '
                                'an address that is not http(s) (HTTP %d); check the '
                                'address, or pass another with --url'
                                % (url, MAX_REDIRECTS, err.code)) from None
        if err.code == 416:
            raise _RangeNotSatisfiable(_total_from(err.headers)) from None
        raise DownloadError('%s answered HTTP %d %s; check the address, or download '
                            'it by hand (or pass --url)' % (url, err.code, err.reason)) from None
    except urllib.error.URLError as err:      # also timeouts, refused connections, TLS
        raise DownloadError('cannot reach %s (%s); check your internet connection or '
                            'proxy, then run the same command again'
                            % (host, _why(err.reason))) from None
    except (http.client.InvalidURL, ValueError) as err:
        raise DownloadError('cannot use the address %r (%s); pass an http:// or https:// '
                            'address with --url' % (url, err)) from None
    except http.client.HTTPException as err:
        raise DownloadError('%s did not answer in HTTP (%s: %s); check the address, or try '
                            'again later' % (host, type(err).__name__, err)) from None
    except OSError as err:                    # e.g. a timeout while reading the headers
        raise DownloadError('cannot reach %s (%s); check your internet connection or '
                            'proxy, then run the same command again'
                            % (host, _why(err))) from None


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows at most MAX_REDIRECTS redirects, and only to http(s) addresses."""
    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlparse(urllib.parse.urljoin(req.full_url, newurl)).scheme
        if scheme not in ('http', 'https'):
            fp.close()
            raise DownloadError('%s redirects to %r, not an http(s) address; download it '
                                'by hand' % (req.full_url, newurl))
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _copy(response, part, mode, bar, limit):
    """Streams the response body into the .part file, chunk by chunk.

    Raises _BodyTooLong before writing a chunk that would take the body past
    `limit` bytes, so the .part never holds more than it may.
    """
    written = 0
    try:
        with open(part, mode) as out:
            while True:
                try:
                    chunk = response.read(CHUNK_SIZE)
                except (http.client.HTTPException, OSError) as err:   # also ssl, timeouts
                    raise _ConnectionLost(_why(err)) from None
                if not chunk:
                    return
                if written + len(chunk) > limit:
                    raise _BodyTooLong()
                out.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise DownloadError(
                'the disk is full (%s so far, kept in %s); free some space on %s and run '
                'the same command again to resume'
                % (_size(part), part, os.path.dirname(os.path.abspath(part)))) from None
        raise


def _why(err):
    """A short reason for a network error; a timeout says how long it waited."""
    if not isinstance(err, BaseException):
        return str(err)
    if isinstance(err, OSError) and 'timed out' in str(err):
        return 'no answer for %g s' % TIMEOUT
    name, text = type(err).__name__, str(err)
    return text if text.startswith(name) else '%s: %s' % (name, text) if text else name


# --- The record beside the .part: which file its bytes belong to ----------------

def _record_path(part):
    return part + '.json'


def _write_record(part, url, headers, total):
    """Writes <part>.json atomically: a half-written record is never read."""
    record = {'url': url, 'etag': headers.get('ETag'),
              'last_modified': headers.get('Last-Modified'), 'total': total}
    tmp = _record_path(part) + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(record, f)
    os.replace(tmp, _record_path(part))


def _read_record(part):
    """The record of `part`, or None if it is missing or unreadable."""
    try:
        with open(_record_path(part)) as f:
            record = json.load(f)
    except (OSError, ValueError, RecursionError):      # a damaged record: start over
        return None
    fields = {'url': str, 'etag': str, 'last_modified': str, 'total': int}
    if not isinstance(record, dict):
        return None
    record = {key: record.get(key) for key in fields}
    if not all(isinstance(record[key], kind) or (key != 'url' and record[key] is None)
               for key, kind in fields.items()):
        return None
    return record


def _validator(record):
    """What If-Range may carry: a strong ETag, else the Last-Modified date, else None."""
    etag = record['etag']
    if etag and not etag.startswith('W/'):   # a weak ETag ("W/...") may not be used
        return etag
    return record['last_modified']


def _can_resume(part, url, record):
    """Whether `part` may be continued from `url`; says why not in one line."""
    if record is None:
        why = 'no record of where it came from'
    elif record['url'] != url:
        why = 'it was begun from another address, %s' % record['url']
    elif _validator(record) is None:
        why = 'the server gave no ETag or Last-Modified to prove the file is still the same'
    else:
        return True
    print('cannot resume %s (%s); starting over' % (part, why), file=sys.stderr)
    return False


def _start_over(part):
    """Deletes the part and its record (the record first: a part without one is never resumed)."""
    _remove(_record_path(part))
    _remove(part)


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


# --- Reading the headers that size a body ---------------------------------------

def _content_length(headers, url):
    """Content-Length as an int, None if absent; DownloadError if it is not a number."""
    value = headers.get('Content-Length')
    if value is None:
        return None
    if not re.fullmatch(r'\s*\d+\s*', value):
        raise DownloadError('%s sent a broken Content-Length (%r); try again later, or '
                            'download it by hand' % (url, value))
    return int(value)


def _continues(headers, record, have, length):
    """Checks a 206 answer against the part and its record.

    Returns:
      (the file's total length or None if unknown, the length of this body), or
      None if the answer does not continue the part: its Content-Range is
      unreadable, does not start at `have`, or gives another total or validator
      than the record (or another length than the Content-Length).
    """
    match = re.fullmatch(r'\s*bytes (\d+)-(\d+)/(\d+|\*)\s*', headers.get('Content-Range', ''))
    if not match:
        return None
    start, end = int(match.group(1)), int(match.group(2))
    total = int(match.group(3)) if match.group(3) != '*' else record['total']
    body = end - start + 1
    if start != have or end < start or (total is not None and end >= total):
        return None
    if record['total'] is not None and total != record['total']:
        return None
    if length is not None and length != body:
        return None
    for header, key in (('ETag', 'etag'), ('Last-Modified', 'last_modified')):
        if headers.get(header) is not None and record[key] is not None \
                and headers.get(header) != record[key]:
            return None
    # A 206 may cover less than the rest; the next attempt asks for more.
    return total, body


def _total_from(headers):
    """Full size from a 416 answer's 'Content-Range: bytes */1000'."""
    content_range = headers.get('Content-Range', '') if headers else ''
    match = re.fullmatch(r'\s*bytes \*/(\d+)\s*', content_range)
    return int(match.group(1)) if match else None


def _check_free_space(path, needed):
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    if needed > free:
        raise DownloadError('not enough disk space for %s: it needs %.0f MB more, %.0f MB are '
                            'free; free some space and run the same command again'
                            % (path, needed / MB, free / MB))


def _size(path):
    return _amount(os.path.getsize(path) if os.path.exists(path) else 0)


def _amount(size):
    return '%.1f MB' % (size / MB) if size >= MB // 10 else '%d bytes' % size


# --- Checks ------------------------------------------------------------------

def expected_shapes():
    """{layer: (weights shape, biases shape)} of the 1000-class bvlc_alexnet."""
    import alexnet  # imports TensorFlow, which only this check needs
    return alexnet.expected_weight_shapes(1000)


def verify_weights(path):
    """Raises weight_files.WeightFileError unless `path` holds every AlexNet layer in shape."""
    weight_files.load_weights(path, expected=expected_shapes())


def verify_zip(path):
    """Raises DownloadError unless the zip is within the bounds, holds PetImages/
    and every member passes its CRC."""
    archive, members = open_zip(path)
    with archive:
        for member in archive.infolist():
            _read_member(archive, path, member, None)
    if not members:
        raise DownloadError('%s has no %s/ folder' % (path, PETIMAGES_FOLDER))


def open_zip(path):
    """Opens a zip whose central directory is within the unpacking bounds.

    Everything is checked before a single member is inflated: the directory's
    size (before zipfile reads it: a directory of millions of entries would fill
    memory on its own), the member count, the total and each member's ratio of
    declared to compressed size, and each member's name and type.
    Returns:
      (zipfile.ZipFile, [ZipInfo of the members under PetImages/]).
    Raises:
      DownloadError: naming the first bound broken.
    """
    directory_bytes = _zip_directory_bytes(path)
    if directory_bytes > MAX_DIRECTORY_BYTES:
        raise DownloadError('%s has a central directory of %s, more than %s (the PetImages '
                            'zip: a few MB); it is not the PetImages zip; refused'
                            % (path, _amount(directory_bytes), _amount(MAX_DIRECTORY_BYTES)))
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS + (OSError,) as err:
        raise DownloadError('%s is not a readable zip (%s)' % (path, err)) from None
    try:
        members = _check_members(path, archive.infolist())
    except BaseException:
        archive.close()
        raise
    return archive, members


def _check_members(path, infos):
    """Returns the members under PetImages/ if all `infos` are within the bounds."""
    if len(infos) > MAX_MEMBERS:
        raise DownloadError('%s has %d members, more than %d (the PetImages zip: 25,000); '
                            'it is not the PetImages zip; refused'
                            % (path, len(infos), MAX_MEMBERS))
    total = 0
    for info in infos:
        name = info.filename
        parts = re.split(r'[/\\]', name)
        if name.startswith(('/', '\\')) or re.match(r'[A-Za-z]:', name) or '..' in parts:
            raise DownloadError('%s: member %r would be written outside the folder it is '
                                'unpacked into; refused' % (path, name))
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DownloadError('%s: member %r is a symbolic link; refused' % (path, name))
        if info.flag_bits & 0x1:
            raise DownloadError('%s: member %r is encrypted; refused' % (path, name))
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise DownloadError('%s: member %r uses compression method %d, not stored or '
                                'deflated; refused' % (path, name, info.compress_type))
        if info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise DownloadError('%s: member %r would inflate %d bytes to %d, more than %d '
                                'times; a zip bomb? refused'
                                % (path, name, info.compress_size, info.file_size, MAX_RATIO))
        total += info.file_size
        if total > MAX_UNPACKED_BYTES:
            raise DownloadError('%s would unpack to more than %s (PetImages: about 800 MB); '
                                'a zip bomb? refused' % (path, _amount(MAX_UNPACKED_BYTES)))
    return [info for info in infos if info.filename.startswith(PETIMAGES_FOLDER + '/')]


_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError,
               NotImplementedError, RuntimeError, ValueError, struct.error)

_END = b'PK\x05\x06'             # end of central directory record, 22 bytes + comment
_END64 = b'PK\x06\x06'           # its zip64 version, 56 bytes, just before...
_END64_LOCATOR = b'PK\x06\x07'   # ...the zip64 locator, 20 bytes, just before _END


def _zip_directory_bytes(path):
    """The size of the zip's central directory, read from its end record where
    zipfile reads it (the last 22 bytes, else the last record in the final 64 KiB)."""
    try:
        with open(path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - (22 + 0xFFFF)))
            tail = f.read()
    except OSError as err:
        raise DownloadError('cannot read %s (%s)' % (path, err)) from None
    at = len(tail) - 22
    if at < 0 or tail[at:at + 4] != _END or tail[-2:] != b'\0\0':
        at = tail.rfind(_END)
    if at < 0 or len(tail) - at < 22:
        raise DownloadError('%s is not a readable zip (no end of central directory)' % path)
    directory_bytes = struct.unpack('<I', tail[at + 12:at + 16])[0]
    if at >= 20 + 56 and tail[at - 20:at - 16] == _END64_LOCATOR \
            and tail[at - 76:at - 72] == _END64:
        directory_bytes = struct.unpack('<Q', tail[at - 76 + 40:at - 76 + 48])[0]
    return directory_bytes


def _read_member(archive, path, member, out):
    """Inflates one member chunk by chunk (into `out` if given), checking its CRC,
    and stops it if it yields more bytes than the directory declared."""
    got = 0
    try:
        with archive.open(member) as source:
            while True:
                chunk = source.read(CHUNK_SIZE)
                if not chunk:
                    break
                got += len(chunk)
                if got > member.file_size:
                    raise DownloadError('%s: member %s inflates past its declared %d bytes; '
                                        'refused' % (path, member.filename, member.file_size))
                if out is not None:
                    out.write(chunk)
    except _ZIP_ERRORS as err:    # zipfile checks each member's CRC as it reads to the end
        raise DownloadError('%s: member %s is corrupt (%s)'
                            % (path, member.filename, err)) from None


def unpack_petimages(zip_path, folder, progress=True):
    """Extracts PetImages/ from the zip into `folder`/PetImages, atomically.

    The zip is checked against the bounds first (open_zip). Members go to a
    temporary folder, renamed when all are out, so an interrupted unpack never
    leaves a half PetImages/ behind. Only plain files and folders are written.
    """
    final = os.path.join(folder, PETIMAGES_FOLDER)
    staging = final + '.part'
    archive, members = open_zip(zip_path)
    with archive:
        if not members:
            raise DownloadError('%s has no %s/ folder' % (zip_path, PETIMAGES_FOLDER))
        _check_free_space(staging, sum(member.file_size for member in members))
        shutil.rmtree(staging, ignore_errors=True)
        try:
            for member in tqdm(members, desc='unpacking', unit='file', disable=not progress):
                _unpack_member(archive, zip_path, member, staging)
        except BaseException as err:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(err, OSError) and err.errno == errno.ENOSPC:
                raise DownloadError('the disk is full while unpacking %s; free some space '
                                    'on %s and run the same command again'
                                    % (zip_path, folder)) from None
            if isinstance(err, OSError):
                raise DownloadError('cannot unpack %s into %s (%s)'
                                    % (zip_path, staging, err)) from None
            raise
    os.replace(os.path.join(staging, PETIMAGES_FOLDER), final)
    os.rmdir(staging)
    return final


def _unpack_member(archive, zip_path, member, staging):
    # open_zip refused absolute names and '..', so the target stays inside staging.
    target = os.path.join(staging, *[p for p in member.filename.split('/') if p])
    if member.filename.endswith('/'):
        os.makedirs(target, exist_ok=True)
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, 'wb') as out:
        _read_member(archive, zip_path, member, out)


# --- The two things to download ------------------------------------------------

def sha1_of(path):
    digest = hashlib.sha1()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(CHUNK_SIZE), b''):
            digest.update(block)
    return digest.hexdigest()


def check_source(source, path):
    """Raises DownloadError or WeightFileError unless `path` is what `source` promises:
    the published SHA-1 (checked before anything parses the file), then the contents."""
    if source.sha1:
        found = sha1_of(path)
        if found != source.sha1:
            raise DownloadError('its SHA-1 is %s, not %s (%s)' % (found, source.sha1,
                                                                   source.name))
    if source.name.endswith(weight_files.CAFFEMODEL_SUFFIX):
        caffemodel.read_caffemodel(path, expected_shapes())
    elif source.name.endswith('.binaryproto'):
        caffemodel.read_mean_image(path)
    else:
        verify_weights(path)


def convert_weights(source_path, dest):
    """Writes the weights of a checked .caffemodel or .npy as the project's .npz at dest."""
    layers = weight_files.load_weights(source_path, expected=expected_shapes())
    weight_files.save_npz(dest, layers)
    verify_weights(dest)


def download_weights(dest, sources=None, mean=MEAN_SOURCE, progress=True):
    """Gets bvlc_alexnet from the first source that answers and writes it as dest (.npz).

    A source file already beside dest is used without the network. A source that
    cannot be reached, or whose file fails its check, is reported and the next is
    tried. Then the mean image, if `mean` is given; its failure is a warning.

    Args:
      dest: the .npz to write.
      sources: Sources in the order to try; default WEIGHT_SOURCES.
      mean: the Source of the mean image, or None.
    Raises:
      DownloadError: no source gave the weights (the message lists why each failed).
    """
    sources = WEIGHT_SOURCES if sources is None else sources
    if os.path.exists(dest):
        try:
            verify_weights(dest)
            print('%s is already there and complete' % dest)
            return dest
        except weight_files.WeightFileError as err:
            print('%s is there but broken (%s); getting it again' % (dest, err))
    folder = os.path.dirname(os.path.abspath(dest))
    for name in sorted({source.name for source in sources}):
        local = os.path.join(folder, name)
        if os.path.exists(local):
            source = next(s for s in sources if s.name == name)
            try:
                check_source(source, local)
            except (DownloadError, weight_files.WeightFileError) as err:
                raise DownloadError('%s is there but is not bvlc_alexnet (%s); move it away and '
                                    'run again' % (local, err)) from None
            convert_weights(local, dest)
            print('converted %s to %s (every layer checked)' % (local, dest))
            return _with_mean(dest, mean, progress)
    failures = []
    for number, source in enumerate(sources, 1):
        local = os.path.join(folder, source.name)
        try:
            fetch(source.url, local, source.max_bytes, progress=progress,
                  verify=lambda part, source=source: check_source(source, part))
        except DownloadError as err:
            reason = ' '.join(str(err).split())
            if len(sources) == 1:
                raise DownloadError(reason) from None
            failures.append('%s: %s' % (source.url, reason))
            if number < len(sources):
                print('could not get %s (%s); trying the next source' % (source.url, reason),
                      file=sys.stderr)
            continue
        convert_weights(local, dest)
        print('saved %s (%s, from %s%s, every layer checked)'
              % (dest, _size(dest), source.url, ', SHA-1 checked' if source.sha1 else ''))
        return _with_mean(dest, mean, progress)
    raise DownloadError('no source gave the weights (%s); run the same command again later '
                        '(it resumes), or put bvlc_alexnet.caffemodel or bvlc_alexnet.npy in %s '
                        'yourself' % ('; '.join(failures), folder))


def _with_mean(dest, mean, progress):
    """Fetches Caffe's mean image beside dest, unless it is there; a failure is a warning."""
    if mean is None:
        return dest
    path = os.path.join(os.path.dirname(os.path.abspath(dest)), mean.name)
    try:
        if os.path.exists(path):
            check_source(mean, path)
        else:
            fetch(mean.url, path, mean.max_bytes, progress=progress,
                  verify=lambda part: check_source(mean, part))
            print('saved %s (SHA-1 checked)' % path)
    except (DownloadError, weight_files.WeightFileError) as err:
        print('warning: no mean image (%s); only `evaluate.py --preprocess caffe` needs it: run '
              'the same command again later' % err, file=sys.stderr)
    return dest


def download_petimages(url, folder, max_bytes, progress=True):
    final = os.path.join(folder, PETIMAGES_FOLDER)
    if os.path.isdir(os.path.join(final, 'Cat')) and os.path.isdir(os.path.join(final, 'Dog')):
        print('%s is already there; delete it to unpack again' % final)
        return final
    zip_path = os.path.join(folder, os.path.basename(urllib.parse.urlparse(url).path)
                            or 'petimages.zip')
    if os.path.exists(zip_path):
        try:
            verify_zip(zip_path)
        except DownloadError as err:
            print('%s is there but broken (%s); downloading it again' % (zip_path, err))
            os.remove(zip_path)
    if not os.path.exists(zip_path):
        fetch(url, zip_path, max_bytes, verify=verify_zip, progress=progress)
    if os.path.exists(final):
        raise DownloadError('%s exists but has no Cat/ and Dog/; move it away and run '
                            'again' % final)
    unpack_petimages(zip_path, folder, progress)
    os.remove(zip_path)   # 787 MB; the photos are all in PetImages/ now
    print('unpacked to %s (Cat/, Dog/)' % final)
    return final


def parse_args(argv=None):
    parser = command_line.ArgumentParser(
        description='Download the bvlc_alexnet weights or the Cats and Dogs photos, '
                    'resuming and checking them.')
    parser.add_argument('what', choices=sorted(TARGETS),
                        help='weights: bvlc_alexnet (the caffemodel, SHA-1 checked, else the '
                             'course\'s .npy) as weights/bvlc_alexnet.npz; petimages: the '
                             'Cats and Dogs zip, unpacked into data/PetImages')
    parser.add_argument('--url', default=None,
                        help='download from here instead: for weights a .caffemodel (it must '
                             'have the BVLC SHA-1) or an .npy/.npz; default: %s, then %s'
                             % (', '.join(source.url for source in WEIGHT_SOURCES),
                                PETIMAGES_URL))
    parser.add_argument('--dest', default=None,
                        help='instead of %s (weights) or %s (the folder to hold '
                             'PetImages/)' % (TARGETS['weights'].dest,
                                              TARGETS['petimages'].dest))
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def main(argv=None):
    """Runs the command line; returns the exit status: 0, 2 on an error, 130 on Ctrl-C."""
    try:
        args = parse_args(argv)
    except SystemExit as exit_:          # --help (0) or a usage error (2)
        return exit_.code
    target = TARGETS[args.what]
    dest = args.dest or target.dest
    progress = not args.no_progress
    try:
        if args.what == 'petimages':
            url = args.url or target.url
            check_url(url)
            download_petimages(url, dest, target.max_bytes, progress=progress)
        elif args.url:
            check_url(args.url)
            download_weights(dest, [url_source(args.url, target.max_bytes)], mean=None,
                             progress=progress)
        else:
            download_weights(dest, progress=progress)
    except (DownloadError, weight_files.WeightFileError) as err:
        return _error(str(err))
    except OSError as err:   # e.g. no permission to write there
        return _error('%s; choose another place with --dest' % err)
    except KeyboardInterrupt:
        print('\ninterrupted; run the same command again to resume', file=sys.stderr)
        return 130
    return 0


def url_source(url, max_bytes):
    """The Source of a --url: a .caffemodel must be the BVLC file; anything else is read
    as an .npy or .npz and checked layer by layer."""
    name = os.path.basename(urllib.parse.urlparse(url).path) or 'bvlc_alexnet.npy'
    if name.lower().endswith(weight_files.CAFFEMODEL_SUFFIX):
        return Source(url, name, BVLC_ALEXNET_SHA1, max_bytes)
    return Source(url, name, None, max_bytes)


def _error(message):
    print('error: ' + ' '.join(message.split()), file=sys.stderr)   # one line, always
    return 2


if __name__ == '__main__':
    sys.exit(main())
