"""The spec's two sagas (6.2) as plain code to read and copy.

- ``create_order``: CreateOrderSaga over Order, Payment, Inventory and Notification; out
  of stock refunds the payment and cancels the order (6.2.1), and the order is PENDING
  while the saga runs, CONFIRMED or CANCELLED after (6.2.3).
- ``hotel_booking``: book a room, charge the card, send the email; the mail server is
  down, so the card is refunded and the room cancelled, and the card fees the refund
  cannot give back are recorded as the saga's discrepancy (6.2.2).

Every step is a local unit of work: it changes the example's aggregates and tables
through ``ctx.uow``, and the orchestrator commits that with the step's transition.
"""
