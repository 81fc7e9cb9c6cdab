"""A small CNN on Fashion-MNIST, written as a plain PyTorch script (laid out like PyTorch's
"Quickstart" tutorial and its MNIST example: data, model, train loop, test loop, epochs, save, load).

It runs under gpudl because of the import block below and nothing else: with ``gpudl`` written
``torch`` there (and ``gpudl.data`` ``torch.utils.data``) it runs under PyTorch
(tests/test_examples.py runs it both ways). The images come from gpudl's reader in
both cases (no torchvision needed): float32 arrays [1, 28, 28], standardised.

    .venv/bin/python examples/fashion_cnn.py --epochs 2
    .venv/bin/python examples/fashion_cnn.py --batches 3           # a smoke test: 3 batches per loop
"""
import argparse
import os

# --- the imports: the only lines that differ from the PyTorch version ---------------------------------------
import gpudl as torch
import gpudl.nn.functional as F
from gpudl import nn
from gpudl.data import DataLoader
# ------------------------------------------------------------------------------------------------------------
from gpudl.data import FashionMNIST


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, 1, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, 1, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((4, 4))
        self.dropout = nn.Dropout(0.25)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 2)
        x = F.relu(self.conv2(x))
        x = self.pool(x)
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        return self.fc(x)


def train(dataloader, model, loss_fn, optimizer, device, max_batches):
    size = len(dataloader.dataset)
    model.train()
    for batch, (X, y) in enumerate(dataloader):
        if batch == max_batches:
            break
        X, y = X.to(device), y.to(device)

        pred = model(X)
        loss = loss_fn(pred, y)

        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0)
        optimizer.step()

        if batch % 100 == 0:
            loss, current = loss.item(), (batch + 1) * len(X)
            print(f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]")


def test(dataloader, model, device, max_batches):
    model.eval()
    seen, test_loss, correct, agree = 0, 0.0, 0, 0
    with torch.no_grad():
        for batch, (data, target) in enumerate(dataloader):
            if batch == max_batches:
                break
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(F.log_softmax(output, dim=1), target, reduction="sum").item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
            _, predicted = torch.max(output, 1)
            agree += (predicted == pred.squeeze(1)).type(torch.float).sum().item()
            seen += target.size(0)
    assert agree == seen, "max(output, 1) and argmax(dim=1) disagree"
    print(f"Test Error: \n Accuracy: {100 * correct / seen:>0.1f}%, Avg loss: {test_loss / seen:>8f} \n")
    return correct / seen


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batches", type=int, default=None, help="stop each loop after this many batches (CI)")
    parser.add_argument("--root", default=None, help="folder of the IDX files (default: $GPUDL_DATA or the apt one)")
    parser.add_argument("--save", default="runs/fashion_cnn.pth", help="where to save the trained weights")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"Using {device} device")

    training_data = FashionMNIST(args.root, train=True)
    test_data = FashionMNIST(args.root, train=False)
    train_dataloader = DataLoader(training_data, batch_size=args.batch_size, shuffle=True, num_workers=2)
    test_dataloader = DataLoader(test_data, batch_size=256)
    for X, y in test_dataloader:
        print(f"Shape of X [N, C, H, W]: {X.shape}")
        print(f"Shape of y: {y.shape} {y.dtype}")
        break

    model = Net().to(device)
    print(model)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)

    for t in range(args.epochs):
        print(f"Epoch {t + 1}\n-------------------------------")
        train(train_dataloader, model, loss_fn, optimizer, device, args.batches)
        accuracy = test(test_dataloader, model, device, args.batches)
        scheduler.step()

    os.makedirs(os.path.dirname(args.save) or ".", exist_ok=True)
    torch.save(model.state_dict(), args.save)
    print(f"Saved PyTorch Model State to {args.save}")
    model = Net().to(device)
    model.load_state_dict(torch.load(args.save, weights_only=True))
    assert test(test_dataloader, model, device, args.batches) == accuracy
    print(f"Done! final accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
