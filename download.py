"""Downloads what the course needs: the pretrained weights and the Cats and Dogs photos.

    python download.py weights     # -> weights/bvlc_alexnet.npy (233 MB)
    python download.py petimages   # -> data/PetImages/Cat, data/PetImages/Dog (787 MB zip)

The weights are Caffe's bvlc_alexnet (the paper's network, section 3) converted
to NumPy by the caffe-tensorflow project; the photos are Microsoft's Kaggle
"Dogs vs. Cats" set, used by the fine-tuning homework.

How a download goes, so that a half or broken file never sits where the other
scripts look for it:

1. Bytes go to ``<dest>.part``. If that exists from an interrupted run, only the
   rest is asked for (an HTTP ``Range`` request); a server that ignores it and
   sends the whole file again (200 instead of 206) is noticed, and the download
   starts over from zero. A dropped connection is resumed a few times.
2. The complete file is verified: the weights must be a whole, finite AlexNet with
   every layer in its shape (weight_files.load_weights with the expected shapes),
   the zip must pass the CRC test of every member (zipfile.testzip).
3. Only then is it renamed to its final name (the zip is then unpacked into a
   temporary folder and renamed to ``PetImages`` the same way).

Errors (no network, HTTP errors, a full disk, a failed check) end with one line
``error: ...`` saying what to do. Run it again after an interruption: it resumes.
"""
from __future__ import annotations

import argparse
import errno
import http.client
import os
import re
import shutil
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib

from tqdm import tqdm

import weight_files

WEIGHTS_URL = 'http://www.cs.toronto.edu/~guerzhoy/tf_alexnet/bvlc_alexnet.npy'
PETIMAGES_URL = ('https://download.microsoft.com/download/3/E/1/'
                 '3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip')
PETIMAGES_FOLDER = 'PetImages'    # the zip's top folder, holding Cat/ and Dog/

# what: (default URL, default --dest)
TARGETS = {
    'weights': (WEIGHTS_URL, 'weights/bvlc_alexnet.npy'),
    'petimages': (PETIMAGES_URL, 'data'),
}

CHUNK_SIZE = 1 << 20       # read and write 1 MiB at a time
TIMEOUT = 60               # seconds without data before giving up on a connection
ATTEMPTS = 3               # a dropped connection is resumed this many times in all
USER_AGENT = 'alexnet-course-download/1.0 (Python urllib)'


class DownloadError(Exception):
    """A download or check failed; the message says what to do."""


# --- Fetching one URL into a file, with resume ------------------------------

def fetch(url, dest, verify=None, progress=True, attempts=ATTEMPTS):
    """Downloads `url` to `dest`, through `dest + '.part'`, resuming where it stopped.

    Args:
      url: http(s) address.
      dest: the final file name; it appears only once complete and verified.
      verify: called with the .part path when complete; raises DownloadError
        (or weight_files.WeightFileError) if the file is bad.
      progress: show a tqdm progress bar.
      attempts: how often a dropped connection is tried again (with Range).
    Raises:
      DownloadError: with a message that says what to do. The .part file is
        kept when resuming can help (dropped connection, full disk) and
        deleted when its content is known to be bad.
    """
    dest = os.fspath(dest)
    part = dest + '.part'
    folder = os.path.dirname(os.path.abspath(dest))
    os.makedirs(folder, exist_ok=True)
    for attempt in range(1, attempts + 1):
        try:
            _fetch_once(url, part, progress)
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
            os.remove(part)
            raise DownloadError('the downloaded file failed its check and was deleted: %s; '
                                'try again later, or download %s by hand'
                                % (err, url)) from None
    os.replace(part, dest)
    return dest


class _ConnectionLost(Exception):
    """The connection broke mid-file; what arrived is in the .part file."""


def _fetch_once(url, part, progress):
    """One HTTP request: appends the missing bytes to `part`."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={'User-Agent': USER_AGENT})
    if have:
        request.add_header('Range', 'bytes=%d-' % have)
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            # "Range not satisfiable": we asked for bytes past the end of the file.
            if _total_from(err.headers) == have:
                return                  # the .part is already complete
            os.remove(part)             # longer than the file: not a prefix of it
            return _fetch_once(url, part, progress)
        raise DownloadError('%s answered HTTP %d %s; check the address, or download '
                            'it by hand (or pass --url)' % (url, err.code, err.reason)) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, 'reason', err)
        raise DownloadError('cannot reach %s (%s); check your internet connection or '
                            'proxy, then run the same command again'
                            % (urllib.parse.urlparse(url).netloc, reason)) from None

    with response:
        resumed = have > 0 and response.status == 206
        if resumed and _start_from(response.headers) != have:
            # A partial answer that does not start where our part ends is no use.
            response.close()
            os.remove(part)
            return _fetch_once(url, part, progress)
        if have and not resumed:
            print('the server ignored the request to resume (HTTP %d instead of 206); '
                  'downloading from the start' % response.status, file=sys.stderr)
            have = 0
        mode = 'ab' if resumed else 'wb'     # append the rest, or (re)start from zero
        length = response.headers.get('Content-Length')
        total = have + int(length) if length is not None else None
        _check_free_space(part, total - have if total else 0)
        with tqdm(total=total, initial=have, unit='B', unit_scale=True, unit_divisor=1024,
                  desc=os.path.basename(part)[:-len('.part')], disable=not progress) as bar:
            _copy(response, part, mode, bar)
    got = os.path.getsize(part)
    if total is not None and got < total:
        raise _ConnectionLost('got %d of %d bytes' % (got, total))


def _copy(response, part, mode, bar):
    """Streams the response body into the .part file, chunk by chunk."""
    try:
        with open(part, mode) as out:
            while True:
                try:
                    chunk = response.read(CHUNK_SIZE)
                except (http.client.IncompleteRead, ConnectionError, socket.timeout) as err:
                    raise _ConnectionLost(type(err).__name__) from None
                if not chunk:
                    return
                out.write(chunk)
                bar.update(len(chunk))
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise DownloadError(
                'the disk is full (%s so far, kept in %s); free some space on %s and run '
                'the same command again to resume'
                % (_size(part), part, os.path.dirname(os.path.abspath(part)))) from None
        raise


def _start_from(headers):
    """First byte of a 206 answer, from 'Content-Range: bytes 100-999/1000'."""
    match = re.match(r'bytes (\d+)-', headers.get('Content-Range', ''))
    return int(match.group(1)) if match else None


def _total_from(headers):
    """Full size from a 416 answer's 'Content-Range: bytes */1000'."""
    match = re.match(r'bytes \*/(\d+)', headers.get('Content-Range', '') if headers else '')
    return int(match.group(1)) if match else None


def _check_free_space(path, needed):
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    if needed > free:
        raise DownloadError('not enough disk space for %s: it needs %.0f MB more, %.0f MB are '
                            'free; free some space and run the same command again'
                            % (path, needed / 1e6, free / 1e6))


def _size(path):
    return '%.1f MB' % (os.path.getsize(path) / 1e6) if os.path.exists(path) else '0 MB'


# --- Checks ------------------------------------------------------------------

def expected_shapes():
    """{layer: (weights shape, biases shape)} of the 1000-class bvlc_alexnet."""
    import alexnet  # imports TensorFlow, which only this check needs
    return alexnet.expected_weight_shapes(1000)


def verify_weights(path):
    """Raises weight_files.WeightFileError unless `path` holds every AlexNet layer in shape."""
    weight_files.load_weights(path, expected=expected_shapes())


def verify_zip(path):
    """Raises DownloadError unless every member's CRC checks and PetImages/ is in it."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()   # reads every member, returns the first bad one
            names = archive.namelist()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        raise DownloadError('%s is not a readable zip (%s)' % (path, err)) from None
    if bad is not None:
        raise DownloadError('%s: member %s fails its CRC check' % (path, bad))
    if not any(name.startswith(PETIMAGES_FOLDER + '/') for name in names):
        raise DownloadError('%s has no %s/ folder' % (path, PETIMAGES_FOLDER))


def unpack_petimages(zip_path, folder, progress=True):
    """Extracts PetImages/ from the zip into `folder`/PetImages, atomically.

    Members go to a temporary folder first, renamed when all are out, so an
    interrupted unpack never leaves a half PetImages/ behind.
    """
    final = os.path.join(folder, PETIMAGES_FOLDER)
    staging = final + '.part'
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = [m for m in archive.infolist()
                       if m.filename.startswith(PETIMAGES_FOLDER + '/')]
            for member in tqdm(members, desc='unpacking', unit='file', disable=not progress):
                archive.extract(member, staging)   # extract() drops '..' and leading '/'
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        if err.errno == errno.ENOSPC:
            raise DownloadError('the disk is full while unpacking %s; free some space on %s '
                                'and run the same command again' % (zip_path, folder)) from None
        raise
    os.replace(os.path.join(staging, PETIMAGES_FOLDER), final)
    os.rmdir(staging)
    return final


# --- The two things to download ------------------------------------------------

def download_weights(url, dest, progress=True):
    if os.path.exists(dest):
        try:
            verify_weights(dest)
            print('%s is already there and complete' % dest)
            return dest
        except weight_files.WeightFileError as err:
            print('%s is there but broken (%s); downloading it again' % (dest, err))
    fetch(url, dest, verify=verify_weights, progress=progress)
    print('saved %s (%s, every layer checked)' % (dest, _size(dest)))
    return dest


def download_petimages(url, folder, progress=True):
    final = os.path.join(folder, PETIMAGES_FOLDER)
    if os.path.isdir(os.path.join(final, 'Cat')) and os.path.isdir(os.path.join(final, 'Dog')):
        print('%s is already there; delete it to unpack again' % final)
        return final
    zip_path = os.path.join(folder, os.path.basename(urllib.parse.urlparse(url).path)
                            or 'petimages.zip')
    if not os.path.exists(zip_path):
        fetch(url, zip_path, verify=verify_zip, progress=progress)
    if os.path.exists(final):
        raise DownloadError('%s exists but has no Cat/ and Dog/; move it away and run '
                            'again' % final)
    unpack_petimages(zip_path, folder, progress)
    os.remove(zip_path)   # 787 MB; the photos are all in PetImages/ now
    print('unpacked to %s (Cat/, Dog/)' % final)
    return final


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Download the bvlc_alexnet weights or the Cats and Dogs photos, '
                    'resuming and checking them.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('what', choices=sorted(TARGETS),
                        help='weights: bvlc_alexnet.npy into weights/; petimages: the '
                             'Cats and Dogs zip, unpacked into data/PetImages')
    parser.add_argument('--url', default=None,
                        help='download from here instead of %s or %s'
                             % (WEIGHTS_URL, PETIMAGES_URL))
    parser.add_argument('--dest', default=None,
                        help='instead of %s (weights) or %s (the folder to hold '
                             'PetImages/)' % (TARGETS['weights'][1], TARGETS['petimages'][1]))
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    default_url, default_dest = TARGETS[args.what]
    url = args.url or default_url
    dest = args.dest or default_dest
    try:
        if args.what == 'weights':
            download_weights(url, dest, progress=not args.no_progress)
        else:
            download_petimages(url, dest, progress=not args.no_progress)
    except DownloadError as err:
        sys.exit('error: %s' % err)
    except OSError as err:   # e.g. no permission to write there
        sys.exit('error: %s; choose another place with --dest' % err)
    except KeyboardInterrupt:
        sys.exit('interrupted; run the same command again to resume')


if __name__ == '__main__':
    main()
