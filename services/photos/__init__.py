"""Photos (photo storage): until the photo pipeline exists, the consent side of it.

It keeps a view of each customer's photo consent (`consent.state.v1`), refuses new photos when
photo storage is not allowed (`accept_new_photo`), and obeys stop directives
(`privacy.directives.v1`): on a photo-storage stop it deletes the customer's stored photos, or,
for patient-record (clinical) photos, which have statutory retention, restricts them; on a
photo-marketing-use stop it takes the photos out of marketing use. It answers each directive
on `privacy.acks.v1` once the stop is durable. The `photos` metadata table is the one the
upload pipeline will fill.
"""
