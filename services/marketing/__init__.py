"""Marketing: the audience, and the suppression list that stops it.

It keeps a materialised view of each customer's consent (`consent.state.v1`) and a suppression
list fed by stop directives (`privacy.directives.v1`), answers each directive on
`privacy.acks.v1` once the suppression is durable, and answers "who may we contact for campaign
X on channel Y" with a final check against its latest consent version at the moment of use.
Customers it has never heard of are not contactable.

`consent_view`, `consent_feed` and `consent_store` are shared with analytics and photos (the
rules and the consumer of every consent-driven processor).
"""
