"""Records: the customer register.

It consumes the commands intake validated (`records.commands.v1`, sealed to this service), keeps
the register in its own schema (`records`) with every personal value encrypted under the
customer's data key and every earlier value kept for rectification history, and publishes each
customer's current entry to the compacted `records.customer.v1` through its outbox.
"""
