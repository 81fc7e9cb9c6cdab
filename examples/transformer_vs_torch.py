"""Train gpudl's Vision Transformer and its PyTorch twin side by side on Fashion-MNIST.

Run it where both are installed (``.venv-torch/bin/python examples/transformer_vs_torch.py``). The two
models start from the same weights (gpudl's initial state_dict, loaded into PyTorch) and see the same
batches in the same order, with the same optimizer (Adam, lr 1e-3), batch size and no dropout. The
gpudl side is exactly ``gpudl train transformer`` with its defaults (seed, validation split, data
order, model), so its test accuracy is the command's. Prints per-epoch validation accuracy of both and
the test accuracies; exits 1 if they differ by more than 0.5 points.
"""
import argparse
import time

import torch

import gpudl
from gpudl import models, nn, optim
from gpudl.benchmark_torch import build as build_torch_twin
from gpudl.data import DataLoader, FashionMNIST, random_split
from gpudl.train import evaluate


def torch_accuracy(model, loader):
    """Accuracy of a PyTorch model over a gpudl DataLoader."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, t in loader:
            logits = model(torch.from_numpy(x.numpy()))
            correct += int((logits.argmax(dim=1) == torch.from_numpy(t.numpy())).sum())
            total += len(t)
    model.train()
    return correct / total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="first N training and test examples only")
    parser.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files")
    args = parser.parse_args()

    # the data, split, order and model of `gpudl train transformer` (gpudl/commands/train.py)
    gpudl.manual_seed(args.seed)
    train_set = FashionMNIST(root=args.data, split="train", limit=args.limit)
    test_set = FashionMNIST(root=args.data, split="test", limit=args.limit)
    n_val = round(len(train_set) * 0.1)
    train_part, val_part = random_split(train_set, [len(train_set) - n_val, n_val], seed=args.seed)
    train_loader = DataLoader(train_part, batch_size=args.batch_size, shuffle=True, seed=args.seed)
    val_loader = DataLoader(val_part, batch_size=1024)
    test_loader = DataLoader(test_set, batch_size=1024)
    model = models.build("transformer", dropout=0.0)
    twin = build_torch_twin("transformer")
    twin.load_state_dict({name: torch.from_numpy(value.numpy()) for name, value in model.state_dict().items()})

    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=args.lr)
    loss_fn = nn.functional.softmax_cross_entropy
    print(f"{len(train_part)} training, {n_val} validation, {len(test_set)} test examples; Adam lr {args.lr}, "
          f"batch {args.batch_size}, torch threads {torch.get_num_threads()}", flush=True)
    for epoch in range(args.epochs):
        seconds = {"gpudl": 0.0, "torch": 0.0}
        train_loader.set_epoch(epoch)
        for x, t in train_loader:
            started = time.perf_counter()
            loss = loss_fn(model(x), t)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seconds["gpudl"] += time.perf_counter() - started
            started = time.perf_counter()
            twin_loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(x.numpy())),
                                                          torch.from_numpy(t.numpy()))
            twin_optimizer.zero_grad()
            twin_loss.backward()
            twin_optimizer.step()
            seconds["torch"] += time.perf_counter() - started
        ours, theirs = evaluate(model, loss_fn, val_loader)[1], torch_accuracy(twin, val_loader)
        print(f"epoch {epoch + 1}/{args.epochs}: validation accuracy gpudl {100 * ours:.2f}% torch {100 * theirs:.2f}%; "
              f"training steps gpudl {seconds['gpudl']:.1f} s, torch {seconds['torch']:.1f} s", flush=True)
    ours, theirs = evaluate(model, loss_fn, test_loader)[1], torch_accuracy(twin, test_loader)
    gap = 100 * abs(ours - theirs)
    print(f"test accuracy: gpudl {100 * ours:.2f}%, torch {100 * theirs:.2f}% (difference {gap:.2f} points)")
    return 0 if gap <= 0.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
