#!/usr/bin/env python3
"""An independent Fashion-MNIST classifier used only to judge generated samples (it shares no weights or code
with the DiT). Trained on the training set; its test-set accuracy is reported beside every evaluation."""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit import data as fmnist  # noqa: E402


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 64, 3, padding=1)
        self.c3 = nn.Conv2d(64, 128, 3, padding=1)
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm2d(32), nn.BatchNorm2d(64), nn.BatchNorm2d(128)
        self.fc1 = nn.Linear(128 * 7 * 7, 256)
        self.fc2 = nn.Linear(256, 10)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):  # x in [−1, 1], [N, 1, 28, 28]
        x = F.relu(self.bn1(self.c1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.c2(x))), 2)
        x = F.max_pool2d(F.relu(self.bn3(self.c3(x))), 2)
        return self.fc2(self.drop(F.relu(self.fc1(x.flatten(1)))))


def train(out_path, epochs=8, data_dir=None, batch=256, seed=0):
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    xi, yi = fmnist.load("train", data_dir)
    xt, yt = fmnist.load("test", data_dir)
    x = torch.from_numpy(fmnist.to_model_range(xi)).to(dev)
    y = torch.from_numpy(yi).to(dev)
    model = SmallCNN().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * ((len(x) + batch - 1) // batch))
    t0 = time.time()
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(x), device=dev)
        for k in range(0, len(x), batch):
            idx = perm[k:k + batch]
            xb = x[idx]
            # small random shifts make the judge robust to slightly off-centre samples
            sh = torch.randint(-2, 3, (2,)).tolist()
            xb = torch.roll(xb, shifts=(sh[0], sh[1]), dims=(2, 3))
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    acc = accuracy(model, torch.from_numpy(fmnist.to_model_range(xt)), torch.from_numpy(yt))
    torch.save(model.state_dict(), out_path)
    info = dict(test_accuracy=acc, epochs=epochs, train_seconds=round(time.time() - t0, 1), device=str(dev))
    with open(os.path.splitext(out_path)[0] + ".json", "w") as f:
        json.dump(info, f, indent=1)
    return model, info


@torch.no_grad()
def predict(model, x):
    model.eval()
    dev = next(model.parameters()).device
    preds = [model(x[k:k + 1000].to(dev)).argmax(1).cpu() for k in range(0, len(x), 1000)]
    return torch.cat(preds)


def accuracy(model, x, y):
    return float((predict(model, x) == y).float().mean())


def load(path, device="cpu"):
    m = SmallCNN()
    m.load_state_dict(torch.load(path, map_location=device))
    return m.to(device).eval()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--data", default=None)
    a = ap.parse_args()
    _, info = train(a.out, a.epochs, a.data)
    print(json.dumps(info))
