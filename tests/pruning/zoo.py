"""Small versions of the architectures people prune, written here (torchvision does not install beside the
CPU torch of this project): ResNet-18-style, MobileNetV2-style, VGG-11-BN, a DenseNet-style block, a
transformer encoder block, a Conv1d network. Same structure as the originals, few channels."""

import torch
import torch.nn.functional as F
from torch import nn

from mipp.experiments.resnet import ResNet18  # the zoo's ResNet, shared with the benchmarks


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 layout: stem, inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 project), head."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(8, 8, 1, 2), InvertedResidual(8, 12, 2, 3), InvertedResidual(12, 12, 1, 3)
        )
        self.head = nn.Sequential(nn.Conv2d(12, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6())
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.head(self.blocks(self.stem(x))), 1).flatten(1))


class VGG11BN(nn.Module):
    """VGG-11 with batch norm (8 convolutions, 3 fully connected layers; a 2x2 map flattened into the first),
    widths / 8, for 32x32 inputs."""

    def __init__(self, classes=10, cfg=(8, "M", 16, "M", 32, 32, "M", 64, 64, "M", 64, 64)):
        super().__init__()
        layers, cin = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin * 2 * 2, 64),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(64, 64),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(64, classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class DenseBlockNet(nn.Module):
    """A DenseNet-style block: each layer reads the concatenation of everything before it (torch.cat)."""

    def __init__(self, classes=10, growth=6, layers=3):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layers = nn.ModuleList()
        c = 8
        for _ in range(layers):
            self.layers.append(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, growth, 3, padding=1)))
            c += growth
        self.transition = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 16, 1))
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return self.fc(self.transition(torch.cat(features, 1)).mean((2, 3)))


class EncoderBlockNet(nn.Module):
    """A ViT-style encoder: patch embedding, pre-norm blocks (LayerNorm, multi-head attention with
    hand-written q/k/v projections, GELU FFN), mean pooling, a classification head."""

    def __init__(self, classes=10, dim=16, heads=2, ffn=32, depth=2, patch=4):
        super().__init__()
        self.patch, self.heads = patch, heads
        self.embed = nn.Linear(3 * patch * patch, dim)
        self.blocks = nn.ModuleList(_Block(dim, heads, ffn) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        n, c, h, w = x.shape
        p = self.patch
        tokens = x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(n, -1, c * p * p)
        z = self.embed(tokens)
        for block in self.blocks:
            z = block(z)
        return self.head(self.norm(z).mean(1))


class _Block(nn.Module):
    def __init__(self, dim, heads, ffn):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)

    def forward(self, z):
        n, t, d = z.shape
        q, k, v = self.qkv(self.norm1(z)).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5).softmax(-1)
        z = z + self.proj((att @ v).transpose(1, 2).reshape(n, t, d))
        return z + self.fc2(F.gelu(self.fc1(self.norm2(z))))


class BertLayer(nn.Module):
    """A post-LayerNorm BERT layer written as Hugging Face writes it: separate query / key / value
    projections, ``num_attention_heads`` and ``attention_head_size`` attributes, reshapes by head size (so
    heads can be removed)."""

    def __init__(self, dim, heads, ffn):
        super().__init__()
        self.num_attention_heads, self.attention_head_size = heads, dim // heads
        self.all_head_size = dim
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attn_out, self.attn_norm = nn.Linear(dim, dim), nn.LayerNorm(dim)
        self.intermediate, self.output, self.out_norm = nn.Linear(dim, ffn), nn.Linear(ffn, dim), nn.LayerNorm(dim)

    def forward(self, h):
        n, t, _ = h.shape
        split = lambda x: x.view(n, t, -1, self.attention_head_size).transpose(1, 2)
        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        att = (q @ k.transpose(-1, -2) / self.attention_head_size**0.5).softmax(-1)
        h = self.attn_norm(h + self.attn_out((att @ v).transpose(1, 2).reshape(n, t, self.all_head_size)))
        return self.out_norm(h + self.output(F.gelu(self.intermediate(h))))


class BertNet(nn.Module):
    """A small BERT-style encoder on token features: embedding, post-LayerNorm layers, mean pooling, a
    classification head."""

    def __init__(self, d_in=6, dim=16, heads=4, ffn=32, depth=2, classes=5):
        super().__init__()
        self.embed, self.norm = nn.Linear(d_in, dim), nn.LayerNorm(dim)
        self.layers = nn.ModuleList(BertLayer(dim, heads, ffn) for _ in range(depth))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        h = self.norm(self.embed(x))
        for layer in self.layers:
            h = layer(h)
        return self.head(h.mean(1))


class Conv1dNet(nn.Module):
    """A 1-D convolutional sequence classifier (Conv1d, BatchNorm1d, ReLU, pooling)."""

    def __init__(self, classes=5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(3, 12, 5, padding=2),
            nn.BatchNorm1d(12),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(12, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.features(x).mean(2))


ZOO = {
    "resnet18": (ResNet18, (3, 16, 16)),
    "mobilenetv2": (MobileNetV2, (3, 16, 16)),
    "vgg11bn": (VGG11BN, (3, 32, 32)),
    "densenet": (DenseBlockNet, (3, 8, 8)),
    "encoder": (EncoderBlockNet, (3, 16, 16)),
    "conv1d": (Conv1dNet, (3, 32)),
    "bert": (BertNet, (7, 6)),
}
