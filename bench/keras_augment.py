#!/usr/bin/python3
"""keras_augment.py - the reference for bench/augment_bench: Keras' ImageDataGenerator
algorithm for the tutorial's parameters (rotation_range=20, width_shift_range=0.02,
height_shift_range=0.02, horizontal_flip, fill_mode 'nearest', interpolation order 1)
on N 32x32x3 images, as keras_preprocessing does it: get_random_transform's draws,
apply_affine_transform (transform matrix composition, transform_matrix_offset_center,
scipy.ndimage.affine_transform per channel with order 1, fill_mode, cval), then
flip_axis; images as float32, one at a time, batches of 32 as NumpyArrayIterator
builds them. Numpy + scipy only (no Keras install needed).

    /usr/bin/python3 bench/keras_augment.py --images 2000
Prints "img/s: X" as its last line.
"""
import argparse
import time

import numpy as np
from scipy import ndimage


def transform_matrix_offset_center(matrix, x, y):
    o_x = float(x) / 2 + 0.5
    o_y = float(y) / 2 + 0.5
    offset_matrix = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
    reset_matrix = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    return np.dot(np.dot(offset_matrix, matrix), reset_matrix)


def apply_affine_transform(x, theta=0, tx=0, ty=0, shear=0, zx=1, zy=1, row_axis=0, col_axis=1, channel_axis=2,
                           fill_mode='nearest', cval=0., order=1):
    transform_matrix = None
    if theta != 0:
        theta = np.deg2rad(theta)
        rotation_matrix = np.array([[np.cos(theta), -np.sin(theta), 0],
                                    [np.sin(theta), np.cos(theta), 0],
                                    [0, 0, 1]])
        transform_matrix = rotation_matrix
    if tx != 0 or ty != 0:
        shift_matrix = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
        transform_matrix = shift_matrix if transform_matrix is None else np.dot(transform_matrix, shift_matrix)
    if shear != 0:
        shear = np.deg2rad(shear)
        shear_matrix = np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0], [0, 0, 1]])
        transform_matrix = shear_matrix if transform_matrix is None else np.dot(transform_matrix, shear_matrix)
    if zx != 1 or zy != 1:
        zoom_matrix = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
        transform_matrix = zoom_matrix if transform_matrix is None else np.dot(transform_matrix, zoom_matrix)
    if transform_matrix is not None:
        h, w = x.shape[row_axis], x.shape[col_axis]
        transform_matrix = transform_matrix_offset_center(transform_matrix, h, w)
        x = np.rollaxis(x, channel_axis, 0)
        final_affine_matrix = transform_matrix[:2, :2]
        final_offset = transform_matrix[:2, 2]
        channel_images = [ndimage.affine_transform(x_channel, final_affine_matrix, final_offset, order=order,
                                                   mode=fill_mode, cval=cval) for x_channel in x]
        x = np.stack(channel_images, axis=0)
        x = np.rollaxis(x, 0, channel_axis + 1)
    return x


def flip_axis(x, axis):
    x = np.asarray(x).swapaxes(axis, 0)
    x = x[::-1, ...]
    return x.swapaxes(0, axis)


def get_random_transform(shape, rotation_range=20, width_shift_range=0.02, height_shift_range=0.02,
                         horizontal_flip=True):
    theta = np.random.uniform(-rotation_range, rotation_range)
    tx = np.random.uniform(-height_shift_range, height_shift_range) * shape[0]
    ty = np.random.uniform(-width_shift_range, width_shift_range) * shape[1]
    zx, zy = 1, 1
    flip_horizontal = (np.random.random() < 0.5) * horizontal_flip
    return dict(theta=theta, tx=tx, ty=ty, shear=0, zx=zx, zy=zy, flip_horizontal=flip_horizontal)


def apply_transform(x, p):
    x = apply_affine_transform(x, p['theta'], p['tx'], p['ty'], p['shear'], p['zx'], p['zy'],
                               row_axis=0, col_axis=1, channel_axis=2, fill_mode='nearest', cval=0., order=1)
    if p['flip_horizontal']:
        x = flip_axis(x, 1)
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--images', type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(args.images, 32, 32, 3), dtype=np.uint8)
    np.random.seed(1)
    batch = np.zeros((32, 32, 32, 3), dtype=np.float32)
    # warm-up
    for i in range(min(64, args.images)):
        apply_transform(x[i].astype(np.float32), get_random_transform((32, 32, 3)))
    t0 = time.perf_counter()
    for start in range(0, args.images, 32):
        for i, j in enumerate(range(start, min(start + 32, args.images))):
            xi = x[j].astype(np.float32)
            batch[i] = apply_transform(xi, get_random_transform(xi.shape))
    t = time.perf_counter() - t0
    print("keras_augment: %d images of 32x32x3 in %.3f s (numpy %s)" % (args.images, t, np.__version__))
    print("us/img: %.3f" % (t / args.images * 1e6))
    print("img/s: %.1f" % (args.images / t))


if __name__ == '__main__':
    main()
