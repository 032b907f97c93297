"""make_npy_files.py - writes .npy and .npz files with NumPy itself, for the NumPy
loaders' tests (tests/test_augment_io.c runs it with /usr/bin/python3, Debian's
python3-numpy, into a temporary folder it removes afterwards).

    /usr/bin/python3 tests/make_npy_files.py OUT_DIR
    /usr/bin/python3 tests/make_npy_files.py --fuzz-corpus tests/fuzz/corpus   (the fuzz seeds)

Every value comes from a formula the C test computes again:
    image pixel   (i * 7 + y * 5 + x * 3 + ch * 11) % 256   image i, row y, column x, channel ch
    label         (i * 3) % 5   (the largest, 4, is at i = 3: five classes)
    float x       (i * 7 + y * 5 + x * 3 + ch * 11) % 256 / 255
with N = 6 images of 4 x 3 pixels (H = 4, W = 3) and C = 2 channels (1 for the grey ones).
"""
import os
import struct
import sys
import zipfile

import numpy as np

N, H, W, C = 6, 4, 3, 2


def images(c=C):
    i, y, x, ch = np.meshgrid(np.arange(N), np.arange(H), np.arange(W), np.arange(c), indexing="ij")
    return ((i * 7 + y * 5 + x * 3 + ch * 11) % 256).astype(np.uint8)


def labels(dtype=np.int64):
    return ((np.arange(N) * 3) % 5).astype(dtype)


def main(out):
    os.makedirs(out, exist_ok=True)
    p = lambda name: os.path.join(out, name)
    x = images()
    y = labels()
    # uint8 images [n][h][w][c] and [n][h][w], labels of several integer types and shapes
    np.save(p("x.npy"), x)
    np.save(p("x_grey.npy"), images(1)[..., 0])
    np.save(p("y_i64.npy"), y)
    np.save(p("y_i32.npy"), labels(np.int32))
    np.save(p("y_u8.npy"), labels(np.uint8))
    np.save(p("y_u16_be.npy"), labels(np.dtype(">u2")))  # big-endian
    np.save(p("y_n1.npy"), y.reshape(N, 1))  # as keras.datasets.cifar10.load_data() gives
    np.save(p("y_onehot_f32.npy"), np.eye(5, dtype=np.float32)[y])
    np.save(p("y_onehot_u8.npy"), np.eye(5, dtype=np.uint8)[y])
    # float arrays: x float32 and float64 (big-endian), y one-hot float
    xf = x.astype(np.float32) / 255
    np.save(p("xf32.npy"), xf)
    np.save(p("xf64_be.npy"), xf.astype(">f8"))
    np.save(p("xf_flat.npy"), xf.reshape(N, -1))
    # the other header versions: 2.0 (4-byte header length) and 3.0 (utf-8 header)
    for version in ((2, 0), (3, 0)):
        with open(p("x_v%d.npy" % version[0]), "wb") as f:
            np.lib.format.write_array(f, x, version=version)
    # archives: stored (np.savez) and deflated (np.savez_compressed), both with ZIP64 extras
    np.savez(p("data.npz"), x_train=x, y_train=y.reshape(N, 1), x_test=x[:2], y_test=y[:2].reshape(2, 1))
    np.savez_compressed(p("data_z.npz"), x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    np.savez(p("float.npz"), x=xf, y=np.eye(5, dtype=np.float32)[y])
    np.savez(p("train_only.npz"), images=x, labels=y)
    # bad files
    np.save(p("x_fortran.npy"), np.asfortranarray(x))
    np.save(p("y_bool.npy"), y > 2)
    np.save(p("y_complex.npy"), y.astype(np.complex64))
    np.save(p("y_short.npy"), y[:5])
    np.save(p("y_neg.npy"), y - 1)
    np.save(p("y_3d.npy"), y.reshape(N, 1, 1))
    np.save(p("y_soft.npy"), np.full((N, 5), 0.2, dtype=np.float32))
    np.save(p("x_2d.npy"), x.reshape(N, -1))
    np.save(p("x_f32_as_images.npy"), xf)
    with open(p("x.npy"), "rb") as f:
        whole = f.read()
    with open(p("x_truncated.npy"), "wb") as f:
        f.write(whole[:-7])
    np.savez(p("bad_member.npz"), x_train=np.asfortranarray(x), y_train=y)
    with open(p("data_z.npz"), "rb") as f:
        z = bytearray(f.read())
    with open(p("truncated.npz"), "wb") as f:
        f.write(bytes(z[: len(z) // 2]))
    # a flipped byte in the first member's compressed data: the CRC-32 (or inflate) catches it
    info = zipfile.ZipFile(p("data_z.npz")).infolist()[0]
    at = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    z[at] ^= 0x55
    with open(p("corrupt.npz"), "wb") as f:
        f.write(bytes(z))
    # a flipped byte in a stored member's data: only the CRC-32 can tell
    with open(p("data.npz"), "rb") as f:
        z = bytearray(f.read())
    info = zipfile.ZipFile(p("data.npz")).infolist()[0]
    z[info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size - 3] ^= 0x01
    with open(p("crc.npz"), "wb") as f:
        f.write(bytes(z))
    # ZIP64 extras in the central directory too (zipfile writes them there only past 4 GiB):
    # a stored archive written by hand whose sizes and offset all live in ZIP64 extras
    write_zip64_everywhere(p("zip64_cd.npz"), {"x_train.npy": npy_bytes(x), "y_train.npy": npy_bytes(y)})


def npy_bytes(a):
    import io
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def write_zip64_everywhere(path, members):
    import zlib
    out = bytearray()
    central = bytearray()
    for name, data in members.items():
        crc = zlib.crc32(data) & 0xFFFFFFFF
        offset = len(out)
        nm = name.encode()
        local_extra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(nm),
                           len(local_extra)) + nm + local_extra + data
        cd_extra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), offset)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                               len(nm), len(cd_extra), 0, 0, 0, 0, 0xFFFFFFFF) + nm + cd_extra
    cd_offset = len(out)
    out += central
    z64_offset = len(out)
    count = len(members)
    # ZIP64 end of central directory record and locator, then the classic record with 0xFFFF.. fields
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, len(central), cd_offset)
    out += struct.pack("<IIQI", 0x07064B50, 0, z64_offset, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(path, "wb") as f:
        f.write(bytes(out))


def write_fuzz_seeds(corpus):
    """The seeds of the fuzz targets tests/fuzz/npy.c and npz.c (committed; written again by
    /usr/bin/python3 tests/make_npy_files.py --fuzz-corpus tests/fuzz/corpus)."""
    x = images()[:2, :2, :2]  # 2 images of 2 x 2 x 2
    y = labels()[:2]
    pairs = {  # npy: 2 bytes (little-endian) of the first file's length, the first file, the second
        "u8_i64": (x, y),
        "grey_u8_n1": (x[..., 0], y.astype(np.uint8).reshape(2, 1)),
        "u8_onehot": (x, np.eye(5, dtype=np.float32)[y]),
        "f32_onehot": (x.astype(np.float32) / 255, np.eye(5, dtype=np.float32)[y]),
        "f64be_i16be": (x.astype(">f8"), y.astype(">i2")),
        "f32_flat_soft": (x.reshape(2, -1).astype(np.float32), np.full((2, 3), 0.5, np.float32)),
    }
    os.makedirs(os.path.join(corpus, "npy"), exist_ok=True)
    for name, (a, b) in pairs.items():
        fa, fb = npy_bytes(a), npy_bytes(b)
        with open(os.path.join(corpus, "npy", name), "wb") as f:
            f.write(struct.pack("<H", len(fa)) + fa + fb)
    import io
    with open(os.path.join(corpus, "npy", "v2_u8_i64"), "wb") as f:
        b = io.BytesIO()
        np.lib.format.write_array(b, x, version=(2, 0))
        fa = b.getvalue()
        f.write(struct.pack("<H", len(fa)) + fa + npy_bytes(y))
    os.makedirs(os.path.join(corpus, "npz"), exist_ok=True)
    np.savez(os.path.join(corpus, "npz", "stored.npz"), x_train=x, y_train=y.reshape(2, 1))
    np.savez_compressed(os.path.join(corpus, "npz", "deflated.npz"), x_train=x, y_train=y)
    np.savez_compressed(os.path.join(corpus, "npz", "float.npz"), x_train=x.astype(np.float32) / 255,
                        y_train=np.eye(5, dtype=np.float32)[y])
    write_zip64_everywhere(os.path.join(corpus, "npz", "zip64_cd.npz"),
                           {"x_train.npy": npy_bytes(x), "y_train.npy": npy_bytes(y)})


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--fuzz-corpus":
        write_fuzz_seeds(sys.argv[2])
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else ".")
