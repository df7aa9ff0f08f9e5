package reactor

import "github.com/valyala/fasthttp"

// headerReceived runs once a request's header is read, before its body.
//
// An HTTP/1.0 request with "Expect: 100-continue" has the expectation
// dropped here: RFC 9110 10.1.1 says a server MUST ignore a 100-continue
// expectation in an HTTP/1.0 request, since an HTTP/1.0 client cannot parse
// a 1xx answer (it would take "100 Continue" for the final one). Without the
// header, fasthttp reads the body at once and the request is answered as
// any other (413 over --max-package-size, by errorHandler); no 100 is sent.
// HTTP/1.1 requests keep theirs and get expect's answer.
//
// The zero RequestConfig keeps the server's own limits and timeouts.
func headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if !h.IsHTTP11() && len(h.Peek(fasthttp.HeaderExpect)) > 0 {
		h.Del(fasthttp.HeaderExpect)
	}
	return fasthttp.RequestConfig{}
}
