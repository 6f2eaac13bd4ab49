"""bench.py run through main() with its smallest settings, as a user would."""
import json
import os

import pytest

import bench


@pytest.mark.slow
def test_quick_bench_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    assert bench.main(['--quick', '--compare-lrn', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    for text in ('GFLOP/s peak', 'share of matmul peak', 'cached/naive', 'Input pipeline alone',
                 'numbers written to %s' % out):
        assert text in printed, text
    results = json.loads(out.read_text())
    # Which CPU kernels ran (conftest, as every script, leaves a value set by hand alone).
    assert results['TF_ENABLE_ONEDNN_OPTS'] == os.environ['TF_ENABLE_ONEDNN_OPTS']
    assert 'TF_ENABLE_ONEDNN_OPTS=%s' % os.environ['TF_ENABLE_ONEDNN_OPTS'] in printed
    assert results['cpu_vector_extensions'] == bench.cpu_vector_extensions()
    assert results['ONEDNN_MAX_CPU_ISA'] == os.environ.get('ONEDNN_MAX_CPU_ISA')
    assert '(%s)' % (results['cpu_vector_extensions'] or 'vector extensions unknown') in printed
    assert results['compute']['matmul_gflops'] > 0
    assert [row['batch'] for row in results['compute']['forward']] == [1, 8]
    # 2 x the layer table's connections: the paper-style count of AlexNet's forward pass.
    assert results['compute']['forward'][0]['gflop_per_image'] == pytest.approx(1.45, abs=0.01)
    # The traced run times every layer of the table; only weighted layers get GFLOP/s.
    layers = results['compute']['layers']
    assert [row['layer'] for row in layers] == ['conv1', 'norm1', 'pool1', 'conv2', 'norm2',
                                                'pool2', 'conv3', 'conv4', 'conv5', 'pool5',
                                                'fc6', 'fc7', 'fc8']
    assert all(row['seconds'] > 0 for row in layers if row['layer'].startswith(('conv', 'norm')))
    assert [row['layer'] for row in layers if row['gflops']] == [
        'conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8']
    assert "Where batch 8's forward goes" in printed
    # The model's LRN against TF's op, alone and (--compare-lrn) in the whole forward pass.
    assert [(row['layer'], row['input']) for row in results['compute']['lrn']] == [
        ('norm1', [8, 55, 55, 96]), ('norm2', [8, 27, 27, 256])]
    assert all(row['seconds'] > 0 and row['tf_op_seconds'] > 0
               for row in results['compute']['lrn'])
    both = results['compute']['lrn_forward']
    for key in ('alexnet_lrn', 'tf_op'):
        assert both[key]['images_per_second'] > 0
        assert [row['layer'] for row in both[key]['layers']] == [row['layer'] for row in layers]
    assert 'LRN alone, batch 8' in printed and 'alexnet.lrn makes the forward pass' in printed
    for name in ('fc6-fc8', 'fc7-fc8'):
        row = results['training'][name]
        assert row['naive'] > 0 and row['ratio'] == pytest.approx(row['cached'] / row['naive'])
    assert results['pipeline']['images_per_second'] > 0
    assert results['pipeline']['decoded_cache_images_per_second'] > 0
    for part in ('compute', 'training', 'pipeline'):
        assert results[part]['peak_rss_mb'] > 50, part
    assert [row['images'] for row in results['memory']] == [50, 500]
    assert 'Input pipeline memory, one training epoch' in printed


def test_generated_photos_are_labelled_by_tint(tmp_path):
    items = bench.make_benchmark_images(str(tmp_path), 6, size=(40, 30), distinct=4)
    assert [label for _, label in items] == [0, 1, 0, 1, 0, 1]
    from PIL import Image
    import numpy as np
    means = [np.asarray(Image.open(path), np.float64).mean(axis=(0, 1)) for path, _ in items[:2]]
    red_minus_blue = [m[0] - m[2] for m in means]
    assert red_minus_blue[0] - red_minus_blue[1] > 40      # +40 red for cats, +40 blue for dogs


def test_bad_arguments_stop_with_a_message(capsys):
    assert bench.main(['--repeats', '0']) == 2
    assert 'at least 1' in capsys.readouterr().err


@pytest.mark.parametrize('flags, widest', [
    ('fpu sse2 avx avx2 fma avx512f avx512bw', 'AVX-512'),
    ('fpu sse2 avx fma avx2', 'AVX2'),            # the order of the list does not matter
    ('fpu sse2 avx', 'AVX'),
    ('fpu sse2 sse4_2', None),
])
def test_cpu_vector_extensions_reads_the_widest_from_the_flags(tmp_path, flags, widest):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('processor\t: 0\nmodel name\t: some CPU avx512f\nflags\t\t: %s\n'
                       'bugs\t\t: avx512f\n' % flags)
    assert bench.cpu_vector_extensions(str(cpuinfo)) == widest


def test_cpu_vector_extensions_without_a_list_is_unknown(tmp_path):
    assert bench.cpu_vector_extensions(str(tmp_path / 'missing')) is None
    (tmp_path / 'empty').write_text('processor\t: 0\n')
    assert bench.cpu_vector_extensions(str(tmp_path / 'empty')) is None


def test_the_report_names_the_cpu_and_onednns_isa_switch_when_set():
    results = {'cpus': 2, 'cpu_vector_extensions': 'AVX-512', 'TF_ENABLE_ONEDNN_OPTS': '1'}
    assert bench.format_report(results).splitlines()[0].startswith('2 CPUs (AVX-512), ')
    assert 'ONEDNN_MAX_CPU_ISA' not in bench.format_report(dict(results, ONEDNN_MAX_CPU_ISA=None))
    assert bench.format_report(dict(results, ONEDNN_MAX_CPU_ISA='AVX2')).splitlines()[0].endswith(
        ', ONEDNN_MAX_CPU_ISA=AVX2')
