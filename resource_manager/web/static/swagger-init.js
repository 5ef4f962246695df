// Swagger UI on /docs/swagger. Settings come from the page's data- attributes, so the page has no
// inline script and the Content-Security-Policy keeps script-src 'self'.
window.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.spec,
    domNode: root,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "BaseLayout",
    // Never the online validator: it is another origin, and the page allows none.
    validatorUrl: null,
    // Credentials entered under "Authorize" last as long as the tab, never in storage.
    persistAuthorization: false,
    displayRequestDuration: true,
    defaultModelsExpandDepth: 0
  });
});
