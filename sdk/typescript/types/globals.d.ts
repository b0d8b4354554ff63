// @connectrpc/connect's declarations name the fetch type `HeadersInit`, which @types/node 20 does
// not declare globally (it is in lib.dom). Declare it from undici's types rather than pulling in lib.dom.
type HeadersInit = import("undici-types").HeadersInit;
