//! What every handler starts from and the error pages it may answer with: [`Reader`] (an axum
//! extractor: the shared state, the reader's [`Visit`] and the request's headers, so a handler
//! does not take and pass the three apart), [`Official`] (the same for a signed-in official,
//! with the sign-in, CSRF and role checks), and [`Refused`], a response that ends a handler
//! early, so each check reads as one line with `?`.

use std::ops::Deref;
use std::sync::Arc;

use agriportal_platform::Error;
use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use crate::http::{html, Visit, Web};
use crate::i18n::Tr;
use crate::pages::Chrome;
use crate::session::{self, Session};

/// One request as a handler sees it.
pub struct Reader {
    /// What the handlers share.
    pub web: Arc<Web>,
    /// The reader: language, session.
    pub visit: Visit,
    /// The request's headers (`If-None-Match`, `Host`).
    pub headers: HeaderMap,
}

/// A response that ends a handler before its page (sign-in redirect, 403, 404, the
/// "unavailable" page). Boxed: a `Response` is large and the happy path should not carry it.
pub struct Refused(Box<Response>);

/// What a handler that can be refused on the way returns.
pub type Answer = Result<Response, Refused>;

impl From<Response> for Refused {
    fn from(response: Response) -> Self {
        Refused(Box::new(response))
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl FromRequestParts<Arc<Web>> for Reader {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Self, Refused> {
        // The `visit` layer puts it there before any handler; without it the router is
        // built wrong, which no reader can mend.
        let Some(visit) = parts.extensions.get::<Visit>().cloned() else {
            tracing::error!("a handler ran without the `visit` layer");
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response().into());
        };
        Ok(Reader {
            web: web.clone(),
            visit,
            headers: parts.headers.clone(),
        })
    }
}

/// 400, 401, 403, 404, 500 and 503.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    /// Layout.
    pub chrome: Chrome,
    /// Heading.
    pub heading: String,
    /// What happened and what to do.
    pub body: String,
}

impl Reader {
    /// The reader's messages.
    pub fn tr(&self) -> Tr {
        self.visit.tr()
    }

    /// The layout of a page titled `title`, `current` in the navigation.
    pub fn chrome(&self, title: &str, current: &'static str, live: bool) -> Chrome {
        self.visit.chrome(title, current, live)
    }

    /// `page` as HTML with `status` (see [`html`]).
    pub fn html<T: Template>(&self, page: &T, status: StatusCode) -> Response {
        html(&self.visit, &self.headers, page, status)
    }

    /// An error page titled by message `title` saying `body`.
    pub fn error_page(&self, status: StatusCode, title: &str, body: String) -> Response {
        let heading = self.tr().t(title);
        let page = ErrorPage {
            chrome: self.chrome(&heading, "", false),
            heading,
            body,
        };
        self.html(&page, status)
    }

    /// The 404 page.
    pub fn not_found(&self) -> Response {
        let body = self.tr().t("error-404-body");
        self.error_page(StatusCode::NOT_FOUND, "error-404-title", body)
    }

    /// The 403 page.
    pub fn forbidden(&self) -> Response {
        let body = self.tr().t("error-403-body");
        self.error_page(StatusCode::FORBIDDEN, "error-403-title", body)
    }

    /// A form refused for its CSRF token or origin (403).
    pub fn csrf_refused(&self) -> Response {
        let body = self.tr().t("csrf-refused");
        self.error_page(StatusCode::FORBIDDEN, "error-400-title", body)
    }

    /// The 500 page: never a stack trace, the cause goes to the log.
    pub fn server_error(&self, err: &Error) -> Response {
        tracing::error!(error = %err, "a page failed");
        let body = self.tr().t("error-500-body");
        self.error_page(StatusCode::INTERNAL_SERVER_ERROR, "error-500-title", body)
    }

    /// A CSV whose backend did not answer: 503, a line of text (a download has no layout).
    pub fn unavailable_csv(&self) -> Response {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            self.tr().t("unavailable-body"),
        )
            .into_response()
    }
}

/// A signed-in official's request: the reader and their session. As an extractor it sends a
/// reader who is not signed in to `/signin`; a form's handler, which has the CSRF token only
/// once the body is read, calls [`Official::posted`].
pub struct Official {
    reader: Reader,
    /// The official's session.
    pub session: Session,
}

impl Deref for Official {
    type Target = Reader;

    fn deref(&self) -> &Reader {
        &self.reader
    }
}

impl FromRequestParts<Arc<Web>> for Official {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Self, Refused> {
        Official::signed_in(Reader::from_request_parts(parts, web).await?)
    }
}

impl Official {
    /// The reader's session, or the redirect to sign in.
    pub fn signed_in(reader: Reader) -> Result<Official, Refused> {
        match reader.visit.session.clone() {
            Some(session) => Ok(Official { reader, session }),
            None => Err(Redirect::to("/signin").into_response().into()),
        }
    }

    /// The official of a form that changes state: signed in, and the form sent from this site
    /// (its `Origin`, when sent) with the session's CSRF token (`csrf`); else the 403 page.
    pub fn posted(reader: Reader, csrf: &str) -> Result<Official, Refused> {
        let me = Official::signed_in(reader)?;
        if !me.visit.same_origin || !session::csrf_matches(csrf, &me.session.csrf) {
            return Err(me.csrf_refused().into());
        }
        Ok(me)
    }

    /// Whether the official is of the central working group.
    pub fn is_admin(&self) -> bool {
        self.session.principal.is_admin()
    }

    /// The official if of the central working group, else the 403 page.
    pub fn admin(self) -> Result<Official, Refused> {
        if self.is_admin() {
            Ok(self)
        } else {
            Err(self.forbidden().into())
        }
    }
}
