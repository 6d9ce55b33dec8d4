// Validates captured FHIR resources with the HL7 FHIR validator engine (HAPI FhirInstanceValidator)
// against R4 core plus the compiled Subscriptions Backport IG 1.1.0 definitions, and checks that
// each XML document parses strictly (unknown elements fail) to the same resource as its JSON twin.
//
// Usage: java -cp <classpath> Validate.java <definitions dir> <captures dir>
//   definitions dir: the IG's JSON conformance resources (and r4-stand-ins/ below it)
//   captures dir:    NAME.json and NAME.xml files; NAME.xml is compared with NAME.json when both
//                    exist; *.codesystem.json files are also loaded as definitions (Herald's own)
// Prints one line per problem and a closing "N passed, N failed" line; exits 1 on any failure.

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.parser.IParser;
import ca.uhn.fhir.parser.StrictErrorHandler;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationResult;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.stream.Stream;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.PrePopulatedValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import org.hl7.fhir.instance.model.api.IBaseResource;

public class Validate {
  // The validator cannot check R5 cross-version extensions without the package registry's
  // xver-paths file (see the definitions' README); they are counted, not failed.
  static final Set<String> KNOWN_LIMITS = Set.of("Extension_EXT_Version_Invalid");

  public static void main(String[] args) throws IOException {
    FhirContext ctx = FhirContext.forR4();
    Path definitions = Path.of(args[0]);
    Path captures = Path.of(args[1]);
    PrePopulatedValidationSupport local = new PrePopulatedValidationSupport(ctx);
    IParser lenient = ctx.newJsonParser();
    for (Path file : jsonFiles(definitions)) {
      local.addResource(lenient.parseResource(read(file)));
    }
    for (Path file : jsonFiles(captures)) {
      if (file.getFileName().toString().endsWith(".codesystem.json")) {
        local.addResource(lenient.parseResource(read(file)));
      }
    }
    ValidationSupportChain chain =
        new ValidationSupportChain(
            new DefaultProfileValidationSupport(ctx),
            local,
            new CommonCodeSystemsTerminologyService(ctx),
            new InMemoryTerminologyServerValidationSupport(ctx),
            new SnapshotGeneratingValidationSupport(ctx));
    FhirInstanceValidator module = new FhirInstanceValidator(chain);
    module.setAnyExtensionsAllowed(true);
    FhirValidator validator = ctx.newValidator().registerValidatorModule(module);

    IParser strictJson = ctx.newJsonParser().setParserErrorHandler(new StrictErrorHandler());
    IParser strictXml = ctx.newXmlParser().setParserErrorHandler(new StrictErrorHandler());
    int passed = 0;
    int failed = 0;
    int limits = 0;
    List<Path> files = new ArrayList<>();
    try (Stream<Path> all = Files.list(captures)) {
      all.filter(p -> p.toString().endsWith(".json") || p.toString().endsWith(".xml"))
          .sorted()
          .forEach(files::add);
    }
    for (Path file : files) {
      String name = file.getFileName().toString();
      String text = read(file);
      List<String> problems = new ArrayList<>();
      boolean xml = name.endsWith(".xml");
      IBaseResource parsed = null;
      try {
        parsed = (xml ? strictXml : strictJson).parseResource(text);
      } catch (Exception e) {
        problems.add("strict parse: " + e.getMessage());
      }
      if (parsed != null) {
        ValidationResult result = validator.validateWithResult(text);
        for (SingleValidationMessage m : result.getMessages()) {
          if (m.getSeverity().ordinal() < ResultSeverityEnum.ERROR.ordinal()) {
            continue;
          }
          if (KNOWN_LIMITS.contains(m.getMessageId())) {
            limits++;
            continue;
          }
          problems.add(m.getLocationString() + ": " + m.getMessage() + " [" + m.getMessageId() + "]");
        }
        Path twin = file.resolveSibling(name.replaceAll("\\.xml$", ".json"));
        if (xml && Files.exists(twin)) {
          String fromXml = ctx.newJsonParser().encodeResourceToString(parsed);
          String fromJson = ctx.newJsonParser().encodeResourceToString(strictJson.parseResource(read(twin)));
          if (!fromXml.equals(fromJson)) {
            problems.add("differs from " + twin.getFileName() + ":\n  xml:  " + fromXml + "\n  json: " + fromJson);
          }
        }
      }
      if (problems.isEmpty()) {
        passed++;
      } else {
        failed++;
        for (String problem : problems) {
          System.out.println("ERROR " + name + " " + problem);
        }
      }
    }
    System.out.println("known limits (cross-version extensions) reported: " + limits);
    System.out.println(passed + " passed, " + failed + " failed");
    System.exit(failed == 0 && passed > 0 ? 0 : 1);
  }

  static List<Path> jsonFiles(Path dir) throws IOException {
    try (Stream<Path> all = Files.walk(dir)) {
      return all.filter(p -> p.toString().endsWith(".json")).sorted().toList();
    }
  }

  static String read(Path file) throws IOException {
    return Files.readString(file, StandardCharsets.UTF_8);
  }
}
