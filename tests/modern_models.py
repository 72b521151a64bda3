"""Hand-written models in the style of modern architectures, built only from custom layers and
keras.ops, with dynamic batch and sequence length (random weights)."""

import keras
import numpy as np
from keras import layers, ops

VOCAB = 50


def _positions(ids_like):
    """0..T-1 for every row, computed at run time (no Python shape arithmetic)."""
    return ops.cumsum(ops.ones_like(ids_like, dtype="int32"), axis=1) - 1


class TokenAndPosition(layers.Layer):
    def __init__(self, vocab, max_len, dim, **kwargs):
        super().__init__(**kwargs)
        self.tokens = layers.Embedding(vocab, dim)
        self.max_len, self.dim = max_len, dim

    def build(self, shape):
        self.positions = self.add_weight(shape=(self.max_len, self.dim), initializer="random_normal",
                                         name="positions")

    def call(self, ids):
        return self.tokens(ids) + ops.take(self.positions, _positions(ids), axis=0)

    def compute_output_shape(self, shape):  # Keras' numpy backend would run call() on garbage ids
        return (*shape, self.dim)


class SelfAttention(layers.Layer):
    def __init__(self, heads, head_dim, causal=False, **kwargs):
        super().__init__(**kwargs)
        self.heads, self.head_dim, self.causal = heads, head_dim, causal
        self.qkv = layers.Dense(3 * heads * head_dim)
        self.out = layers.Dense(heads * head_dim)

    def _split(self, x):
        x = ops.reshape(x, (-1, ops.shape(x)[1], self.heads, self.head_dim))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, x):
        q, k, v = ops.split(self.qkv(x), 3, axis=-1)
        q, k, v = self._split(q), self._split(k), self._split(v)
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / np.sqrt(self.head_dim).astype("float32")
        weights = ops.softmax(scores, axis=-1)
        merged = ops.transpose(ops.matmul(weights, v), (0, 2, 1, 3))
        return self.out(ops.reshape(merged, (-1, ops.shape(x)[1], self.heads * self.head_dim)))


class EncoderBlock(layers.Layer):
    def __init__(self, heads, head_dim, **kwargs):
        super().__init__(**kwargs)
        dim = heads * head_dim
        self.attention = SelfAttention(heads, head_dim)
        self.norm1, self.norm2 = layers.LayerNormalization(), layers.LayerNormalization()
        self.up, self.down = layers.Dense(2 * dim), layers.Dense(dim)

    def call(self, x):
        x = self.norm1(x + self.attention(x))
        return self.norm2(x + self.down(ops.gelu(self.up(x))))


def bert_like():
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    h = TokenAndPosition(VOCAB, 64, 16, name="embed")(ids)
    h = EncoderBlock(2, 8, name="block_0")(h)
    h = EncoderBlock(2, 8, name="block_1")(h)
    pooled = ops.mean(h, axis=1)
    return keras.Model(ids, layers.Dense(3, name="classifier")(pooled), name="bert_like")


class RMSNorm(layers.Layer):
    def build(self, shape):
        self.scale = self.add_weight(shape=(shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * ops.rsqrt(ops.mean(ops.square(x), axis=-1, keepdims=True) + 1e-6) * self.scale


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    return ops.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


class GQARotaryAttention(layers.Layer):
    def __init__(self, q_heads, kv_heads, head_dim, **kwargs):
        super().__init__(**kwargs)
        self.q_heads, self.kv_heads, self.head_dim = q_heads, kv_heads, head_dim
        self.q = layers.Dense(q_heads * head_dim, use_bias=False)
        self.kv = layers.Dense(2 * kv_heads * head_dim, use_bias=False)
        self.o = layers.Dense(q_heads * head_dim, use_bias=False)
        self.inv_freq = 1.0 / (10000 ** (np.arange(0, head_dim, 2, dtype="float32") / head_dim))

    def _heads(self, x, n):
        return ops.transpose(ops.reshape(x, (-1, ops.shape(x)[1], n, self.head_dim)), (0, 2, 1, 3))

    def call(self, x):
        positions = ops.cast(_positions(x[:, :, 0]), "float32")  # (B, T)
        angles = positions[:, None, :, None] * self.inv_freq  # (B, 1, T, D/2)
        cos, sin = ops.cos(angles), ops.sin(angles)
        q = _rotate(self._heads(self.q(x), self.q_heads), cos, sin)
        k, v = ops.split(self.kv(x), 2, axis=-1)
        k = _rotate(self._heads(k, self.kv_heads), cos, sin)
        v = self._heads(v, self.kv_heads)
        groups = self.q_heads // self.kv_heads
        k, v = ops.repeat(k, groups, axis=1), ops.repeat(v, groups, axis=1)
        scores = ops.matmul(q, ops.swapaxes(k, -1, -2)) * (self.head_dim ** -0.5)
        causal = positions[:, None, :, None] >= positions[:, None, None, :]
        scores = ops.where(causal, scores, -1e9)
        out = ops.matmul(ops.softmax(scores, axis=-1), v)
        out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (-1, ops.shape(x)[1], self.q_heads * self.head_dim))
        return self.o(out)


class DecoderBlock(layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm1, self.norm2 = RMSNorm(), RMSNorm()
        self.attention = GQARotaryAttention(4, 2, 8)
        self.gate, self.up, self.down = layers.Dense(48, use_bias=False), layers.Dense(48, use_bias=False), \
            layers.Dense(32, use_bias=False)

    def call(self, x):
        x = x + self.attention(self.norm1(x))
        h = self.norm2(x)
        return x + self.down(ops.silu(self.gate(h)) * self.up(h))


def rotary_gqa_decoder():
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    h = layers.Embedding(VOCAB, 32, name="embed")(ids)
    h = DecoderBlock(name="block_0")(h)
    h = RMSNorm(name="final_norm")(h)
    return keras.Model(ids, layers.Dense(VOCAB, name="lm_head")(h), name="decoder")


class PatchEmbedding(layers.Layer):
    def __init__(self, patch, dim, num_patches, **kwargs):
        super().__init__(**kwargs)
        self.patch, self.dim, self.num_patches = patch, dim, num_patches
        self.project = layers.Conv2D(dim, patch, strides=patch)

    def build(self, shape):
        self.cls = self.add_weight(shape=(1, 1, self.dim), initializer="random_normal", name="cls")
        self.pos = self.add_weight(shape=(1, self.num_patches + 1, self.dim), initializer="random_normal",
                                   name="pos")

    def call(self, images):
        patches = ops.reshape(self.project(images), (-1, self.num_patches, self.dim))
        cls = ops.broadcast_to(self.cls, (ops.shape(patches)[0], 1, self.dim))  # dynamic batch
        return ops.concatenate([cls, patches], axis=1) + self.pos


def vit_like():
    images = keras.Input((16, 16, 3), name="images")
    h = PatchEmbedding(4, 16, 16, name="patch_embed")(images)
    h = EncoderBlock(2, 8, name="block_0")(h)
    return keras.Model(images, layers.Dense(5, name="head")(h[:, 0]), name="vit_like")


def raw_ops_functional():
    x = keras.Input((None, 6), name="x")
    a = ops.tanh(x[:, :, :3]) * ops.sigmoid(x[:, :, 3:])
    b = ops.expand_dims(ops.max(a, axis=1), 1) - ops.mean(a, axis=1, keepdims=True)
    c = ops.concatenate([a, ops.abs(b) + a[:, ::-1]], axis=-1)
    d = ops.sum(ops.where(c > 0, c, 0.1 * c), axis=-1)
    return keras.Model(x, [d, c[:, -1, :]], name="raw_ops")


class GatedByCond(layers.Layer):
    def call(self, x):
        return ops.cond(ops.mean(x) > 0, lambda: x * 2.0, lambda: ops.relu(x) - 1.0)


class IteratedRefine(layers.Layer):
    def call(self, x):
        return ops.fori_loop(0, 3, lambda i, v: 0.5 * v + ops.tanh(v), x)


def control_flow_layers():
    x = keras.Input((None, 4), name="x")
    return keras.Model(x, IteratedRefine(name="refine")(GatedByCond(name="gate")(x)), name="control_flow")
