"""The spec's running example: an online shop with Order, Payment, Inventory, Notification."""
