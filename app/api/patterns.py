"""Header patterns shared by the routes that check them and the OpenAPI document that states them."""

# RFC 9110 If-Match: "*" or a comma-separated list of entity tags. A wallet's ETag is its version, strong: "7".
ENTITY_TAG = r'(?:W/)?"[\x21\x23-\x7e]*"'
IF_MATCH_PATTERN = rf'^[ \t]*(?:\*|{ENTITY_TAG}(?:[ \t]*,[ \t]*{ENTITY_TAG})*)[ \t]*$'
