"""Analytics: pseudonymised statistics, only of customers whose consent allows it.

It keeps row-level contributions derived from the clear metadata of each customer's register
entry (`records.customer.v1`: registered or not, data classes, sources, the version and the
month, and the analytics facts: age band, language, acquisition channel, visit months), keyed
by a keyed hash of the customer number (HMAC-SHA256 with `pseudonym_key`), never the number
itself; the consent view and the exclusions are keyed the same way. Aggregates count only
customers whose consent allows analytics and who are not excluded, and hide small cells. On an
analytics withdrawal or objection (`privacy.directives.v1`) it deletes the customer's
contributions, excludes them, and answers on `privacy.acks.v1` once that is durable.
"""
