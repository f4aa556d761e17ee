// Who a request is from, as nginx can verify it cheaply, for the per-client limits.
//
// A bearer token counts only when its HMAC signature checks out with the
// app's own key and algorithm and it has not expired: then the client is the
// token's subject ("s:<user id>"), whichever token of that user it sends and
// however often it logs in again. Anything else (no token, a made-up or
// expired one) is the client's address ("a:<address>"). The prefixes keep the
// two key spaces apart. The app verifies every token again; this only picks
// the bucket a request is counted in, so a client cannot make up a fresh
// bucket per request.
//
// The per-client limits apply only while the stack is saturated: more
// requests in progress at nginx than the app has request slots
// ($sluice_slots), so that others are waiting. Below that nobody waits for
// anybody and no client is refused for being busy (an empty key is not
// counted by limit_req or limit_conn).

const crypto = require('crypto');

const HASHES = {HS256: 'sha256', HS384: 'sha384', HS512: 'sha512'};
const TOKEN = /^bearer\s+([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/i;
// Read once, when nginx loads its configuration (each request's VM is a copy).
const KEY = process.env.SLUICE_SECRET_KEY;
const ALGORITHM = process.env.SLUICE_JWT_ALGORITHM || 'HS256';

function decode(part) {
    return JSON.parse(Buffer.from(part, 'base64url').toString());
}

// Compares the two signatures through an HMAC of each: where === stops early
// says nothing about the signature, so timing cannot help forge one (the app
// checks every token again, but with the same key).
function same(a, b) {
    const blind = (s) => crypto.createHmac('sha256', KEY).update('compare:' + s).digest('base64url');
    return blind(a) === blind(b);
}

function verifiedSubject(r) {
    const match = TOKEN.exec(r.headersIn.Authorization || '');
    if (!match || !KEY || !HASHES[ALGORITHM]) {
        return '';
    }
    try {
        if (decode(match[1]).alg !== ALGORITHM) {
            return '';
        }
        const signature = crypto.createHmac(HASHES[ALGORITHM], KEY)
            .update(match[1] + '.' + match[2])
            .digest('base64url');
        if (!same(signature, match[3])) {
            return '';
        }
        const claims = decode(match[2]);
        const sub = claims.sub;
        if (typeof sub !== 'string' || sub === '' || sub.length > 64) {
            return '';
        }
        if (typeof claims.exp !== 'number' || claims.exp <= Date.now() / 1000) {
            return '';
        }
        return sub;
    } catch (e) {
        return '';
    }
}

function identity(r) {
    const subject = verifiedSubject(r);
    return subject ? 's:' + subject : 'a:' + r.variables.remote_addr;
}

function saturated(r) {
    return Number(r.variables.connections_writing) > Number(r.variables.sluice_slots);
}

function saturatedIdentity(r) {
    return saturated(r) ? identity(r) : '';
}

function saturatedAddress(r) {
    return saturated(r) ? r.variables.remote_addr : '';
}

export default {identity, saturatedIdentity, saturatedAddress};
