"""ci/aclrtlaunch_gen.py writes the launch headers ascendc_library would: one per
kernel entry, (numBlocks, stream) first, global-memory pointers as void*."""
import glob
import importlib.util
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("aclrtlaunch_gen", os.path.join(ROOT, "ci", "aclrtlaunch_gen.py"))
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)


def test_one_header_per_kernel_entry_of_the_project(tmp_path):
    """One header per entry (a source may hold several: the plain and the fused
    form of elemt / backward_reduce), each with the entry's GM arguments."""
    sources = sorted(glob.glob(os.path.join(ROOT, "op_kernels", "kernels", "batch_norm_*.cpp")))
    entry = re.compile(r'extern "C" __global__ __aicore__ void (\w+)\(([^)]*)\)')
    expected = {}
    for src in sources:
        for name, args in entry.findall(open(src).read()):
            expected[name] = len(re.findall(r"GM_ADDR\s+\w+", args))
    assert "batch_norm_elemt_act" in expected and "batch_norm_backward_reduce_relu_clast" in expected
    written = gen.generate(str(tmp_path), sources)
    assert sorted(os.path.basename(p) for p in written) == sorted(f"aclrtlaunch_{n}.h" for n in expected)
    for header in written:
        name = os.path.basename(header)[len("aclrtlaunch_"):-2]
        decl = open(header).read()
        params = re.search(r"aclrtlaunch_\w+\((.*)\);", decl).group(1).split(", ")
        assert params[:2] == ["uint32_t numBlocks", "aclrtStream stream"]
        assert len(params) == 2 + expected[name] and all(p.startswith("void* ") for p in params[2:])
        assert "#define ACLRT_LAUNCH_KERNEL(kernel_func) aclrtlaunch_##kernel_func" in decl


def test_comments_scalars_and_name_clashes():
    src = '''
    // extern "C" __global__ __aicore__ void commented_out(GM_ADDR x) {}
    extern "C" __global__ __aicore__ void k(GM_ADDR x, __gm__ float* y, uint32_t numBlocks, GM_ADDR stream) {}
    '''
    [(name, params)] = gen.kernel_entries(src)
    assert name == "k"
    assert params == [("void*", "x"), ("void*", "y"), ("uint32_t", "numBlocks"), ("void*", "stream")]
    text = gen.header_text(name, params)
    assert ("uint32_t aclrtlaunch_k(uint32_t _numBlocks, aclrtStream _stream, void* x, void* y, "
            "uint32_t numBlocks, void* stream);") in text
